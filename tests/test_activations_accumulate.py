"""Streaming accumulators: Chan/Pebay merges equal one-shot numpy statistics; state round-trips."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lminspect.activations.accumulate import SiteAccumulator, chan_merge  # noqa: E402


def _batches(seed: int = 0, d: int = 7):
    rng = np.random.default_rng(seed)
    sizes = [1, 5, 64, 3, 200, 17]
    out = []
    for i, n in enumerate(sizes):
        x = rng.standard_t(df=5, size=(n, d)) * (1 + np.arange(d)) + 100.0 + i  # offset: cancellation bait
        x[:, 2] *= 0.0  # a constant dimension
        x[:, 2] += 3.0
        out.append(x.astype(np.float32))
    return out


def _rows(n: int, doc: int) -> np.ndarray:
    return np.stack([np.full(n, doc), np.arange(n)], 1).astype(np.int64)


def test_chan_merge_matches_numpy_moments():
    rng = np.random.default_rng(1)
    a, b = rng.gamma(2.0, size=(50, 3)), rng.gamma(2.0, size=(9, 3)) + 1.0

    def moments(x):
        m = x.mean(0)
        c = x - m
        return m, (c**2).sum(0), (c**3).sum(0), (c**4).sum(0)

    got = chan_merge(50.0, moments(a), 9.0, moments(b))
    want = moments(np.concatenate([a, b]))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-10)


def test_accumulator_equals_one_shot():
    batches = _batches()
    acc = SiteAccumulator(7, outlier_k=3.0)
    for i, x in enumerate(batches):
        acc.update(torch.from_numpy(x), _rows(len(x), i))
    allx = np.concatenate(batches).astype(np.float64)
    assert acc.n == len(allx)
    np.testing.assert_allclose(acc.mean, allx.mean(0), rtol=1e-6)
    c = allx - allx.mean(0)
    var = (c**2).mean(0)
    np.testing.assert_allclose(acc.m2 / acc.n, var, rtol=1e-4, atol=1e-9)
    live = var > 0
    kurt = (c**4).mean(0)[live] / var[live] ** 2
    np.testing.assert_allclose(acc.n * acc.m4[live] / acc.m2[live] ** 2, kurt, rtol=1e-3)
    np.testing.assert_array_equal(acc.min, allx.min(0))
    np.testing.assert_array_equal(acc.max, allx.max(0))
    # the histogram counts every HIST_STRIDE-th token of each batch
    assert acc.hist.sum() + acc.under + acc.over == sum(-(-len(b) // acc.hist_stride) for b in batches) * 7
    # top examples: the largest |x| per dim, with their (doc, offset)
    absx = np.abs(allx)
    for d in range(7):
        assert acc.top_val[d, 0] == pytest.approx(absx[:, d].max(), rel=1e-6)
    d = 6
    doc, off = acc.top_pos[d, 0]
    assert abs(batches[doc][off, d]) == pytest.approx(acc.top_val[d, 0], rel=1e-6)


def test_state_roundtrip_and_fire_counts():
    x = torch.tensor([[1.0, -1.0, 0.0], [2.0, -3.0, 0.0], [-1.0, -2.0, 0.0]])
    acc = SiteAccumulator(3, fire=True)
    acc.update(x, _rows(3, 0))
    acc2 = SiteAccumulator.from_state({k: np.array(v) for k, v in acc.state().items()})
    np.testing.assert_array_equal(acc2.fired, [2, 0, 0])
    for f in SiteAccumulator.FIELDS:
        np.testing.assert_array_equal(getattr(acc, f), getattr(acc2, f))
    assert (acc2.n, acc2.hist_range, acc2.outlier_k) == (acc.n, acc.hist_range, acc.outlier_k)


def test_massive_dimension_is_flagged():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 16)).astype(np.float32)
    x[123, 5] = 400.0  # one massive activation in dim 5
    acc = SiteAccumulator(16, outlier_k=20.0)
    acc.update(torch.from_numpy(x[:250]), _rows(250, 0))
    acc.update(torch.from_numpy(x[250:]), _rows(250, 1))
    assert list(np.nonzero(acc.outliers)[0]) == [5]
    assert tuple(acc.top_pos[5, 0]) == (0, 123)
