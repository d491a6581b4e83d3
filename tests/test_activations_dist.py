"""``activations`` under torchrun: the Chan merge itself, and two real gloo processes == one process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from lminspect.activations import load  # noqa: E402
from lminspect.activations.accumulate import SiteAccumulator  # noqa: E402
from lminspect.cli import app  # noqa: E402

WORDS = "the model read many books and learned words while every layer added meaning to a story".split()
EXACT = ("min", "max", "hist", "fired", "top_val", "top_pos")
MOMENTS = ("mean", "m2", "m3", "m4")


def _batches(seed: int = 0) -> list[tuple[object, np.ndarray]]:
    """Seven batches of different lengths; a few heavy-tailed columns (outliers, examples) and a ReLU-like one."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = []
    for b in range(7):
        n = 20 + 9 * b
        x = torch.randn(n, 12, generator=g) * torch.linspace(0.5, 2.0, 12) + 0.3
        x[:, 3] = torch.distributions.StudentT(2.0).sample((n,)) * 3
        x[:, 5] = x[:, 5].clamp(min=0)
        rows = np.stack([np.full(n, b, dtype=np.int64), np.arange(n, dtype=np.int64)], 1)
        out.append((x, rows))
    return out


def _assert_same(a: SiteAccumulator, b: SiteAccumulator, outliers: bool = False) -> None:
    assert (a.n, a.under, a.over, a.hist_range) == (b.n, b.under, b.over, b.hist_range)
    if outliers:  # only with the ranks' shared yardstick (one accumulator's running std differs)
        np.testing.assert_array_equal(a.outliers, b.outliers)
    for f in MOMENTS:
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-5, atol=1e-9 * max(1.0, b.n), err_msg=f)
    for f in EXACT:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


def test_merge_of_two_shares_equals_one_pass():
    """Batches 0, 2, 4, 6 in one accumulator and 1, 3, 5 in another (with the first batch's histogram
    range, as under torchrun), merged == all seven in one; a merge with an empty share changes nothing."""
    data = _batches()
    whole = SiteAccumulator(12, fire=True, outlier_k=3.0)
    for x, rows in data:
        whole.update(x, rows)
    a = SiteAccumulator(12, fire=True, outlier_k=3.0)
    a.update(*data[0])
    b = SiteAccumulator(12, fire=True, outlier_k=3.0, hist_range=a.hist_range)
    for k, (x, rows) in enumerate(data[1:], start=1):
        (b if k % 2 else a).update(x, rows)
    a.merge(SiteAccumulator(12, fire=True, hist_range=a.hist_range))
    merged = SiteAccumulator(12, fire=True, outlier_k=3.0)
    merged.merge(a)  # into an empty one: a copy
    merged.merge(SiteAccumulator.from_state(b.state()))  # as it travels between processes
    _assert_same(merged, whole)
    assert merged.outliers.sum() > 0 and merged.top_val[3, 0] == np.abs(np.concatenate([x[:, 3] for x, _ in data])).max()
    with pytest.raises(ValueError, match="histogram ranges"):
        merged.merge(SiteAccumulator.from_state({**b.state(), "hist_range": np.array([99.0, 3.0, 4.0])}))


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    rng = np.random.default_rng(1)
    p = tmp_path_factory.mktemp("docs") / "docs.jsonl"
    p.write_text("".join(json.dumps({"text": " ".join(rng.choice(WORDS, int(rng.integers(1, 40))))}) + "\n"
                         for _ in range(50)))
    return p


def test_activations_under_torchrun_match_one_process(tiny_llama_dir, docs, tmp_path, torchrun):
    """Two gloo processes (interrupted after 3 batches - the second step leaves rank 1 idle - then
    resumed, a snapshot after every step) write the statistics one uninterrupted process writes,
    outlier counts included; refusals still hold under torchrun."""
    args = [str(tiny_llama_dir), "--data", str(docs), "--tokens", "650", "--seq-len", "16", "--batch-size", "3",
            "--outlier-k", "3", "--threads", "1"]
    one = CliRunner().invoke(app, ["activations", *args, "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    two = tmp_path / "two"
    cmd = ["-m", "lminspect", "activations", *args, "--out", str(two), "--save-every", "0"]
    r = torchrun([*cmd, "--max-batches", "3"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert load(two).batches == 3 and not load(two).complete
    r = torchrun(cmd)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("16 sites, 2 processes") == 1  # the summary line, from rank 0 only
    a, b = load(two), load(tmp_path / "one")
    assert a.complete and (a.tokens, a.batches, a.sites) == (b.tokens, b.batches, b.sites)
    assert {k: a.progress[k] for k in ("doc", "offset")} == {k: b.progress[k] for k in ("doc", "offset")}
    for site in b.sites:
        _assert_same(a[site]._acc, b[site]._acc, outliers=True)
    assert sum(int(b[s].outlier_counts.sum()) for s in b.sites) > 100  # --outlier-k 3 finds some
    assert sorted(p.name for p in two.iterdir() if not p.name.startswith(".")) == ["arrays", "index.json", "stats.npz"]
    np.testing.assert_allclose(np.load(two / "arrays" / "resid_out.kurtosis.npy"),
                               np.load(tmp_path / "one" / "arrays" / "resid_out.kurtosis.npy"), rtol=1e-5)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    r = torchrun(["-m", "lminspect", "activations", *args, "--out", str(other)])
    assert r.returncode != 0 and "lminspect: error:" in r.stderr and "not an activations results dir" in r.stderr
    assert sorted(p.name for p in other.iterdir() if not p.name.startswith(".")) == ["notes.txt"]
    r = torchrun(["-m", "lminspect", "activations", *args, "--out", str(tmp_path / "kept"), "--keep-tokens"])
    assert r.returncode != 0 and "--keep-tokens is not supported under torchrun" in r.stderr
    assert not (tmp_path / "kept" / "index.json").exists()
