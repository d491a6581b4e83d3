"""An uncached diff computes each matrix side's Gram + eigh once (shared by the statistics and the
singular directions) and writes its results to a few pack files, which later calls read."""

from __future__ import annotations

import json

import pytest

from lminspect.cachepack import JsonPack, cache_batch
from lminspect.compare import diff as d
from lminspect.fsutil import cache_dir
from lminspect.weights import open_store

pytestmark = pytest.mark.usefixtures("private_cache")


def test_uncached_diff_writes_packs_and_reads_them_back(tiny_llama_dir, scaled_copy, monkeypatch):
    a, b = open_store(tiny_llama_dir), open_store(scaled_copy)
    rows, _ = d.diff_models(a, b)
    stats_files = sorted(p.name for p in (cache_dir() / "stats").iterdir())
    diff_files = sorted(p.name for p in (cache_dir() / "diff").iterdir())
    assert len(stats_files) == 2 and all(f.endswith(".pack.json") for f in stats_files)  # one per model file
    assert len(diff_files) == 1 and diff_files[0].endswith(".pack.json")
    pack = json.loads((cache_dir() / "diff" / diff_files[0]).read_text())
    assert len(pack) == len(rows)
    # a new process (fresh packs) answers from the files: nothing is computed again
    import lminspect.cachepack as packs
    import lminspect.weights.stats as st

    packs.forget_cache_packs()
    monkeypatch.setattr(d, "array_diff", lambda *x, **k: pytest.fail("diff recomputed"))
    monkeypatch.setattr(st, "array_stats", lambda *x, **k: pytest.fail("stats recomputed"))
    again, _ = d.diff_models(a, b)
    assert again == rows
    name = "layers.2.mlp.up.weight"
    assert a.stats(name) == st.tensor_stats(a, name)  # the single-model statistics come from the pack too


def test_shared_directions_equal_separate_ones(tiny_llama_dir, scaled_copy, monkeypatch):
    """The directions from the statistics' eigendecomposition give the numbers top_directions gives."""
    a, b = open_store(tiny_llama_dir), open_store(scaled_copy)
    calls = []
    real = d.top_directions
    monkeypatch.setattr(d, "top_directions", lambda x, k=d.TOP_K: calls.append(x.shape) or real(x, k))
    names = ["layers.1.attn.q.weight", "layers.2.mlp.down.weight"]
    shared, _ = d.diff_models(a, b, names=names)
    assert calls == []  # every matrix side came from the statistics' eigh
    for row in shared:
        xa, xb = a[row["name"]], b[row["name"]]
        separate = d.direction_overlap(xa, xb)
        for k in ("subspace_overlap", "top_cos", "max_principal_angle_deg"):
            assert row[k] == pytest.approx(separate[k], rel=1e-6, abs=1e-4), (row["name"], k)
        assert row["d_alpha"] == pytest.approx(b.stats(row["name"])["alpha"] - a.stats(row["name"])["alpha"])


def test_pack_merges_writers_and_sees_new_results(tmp_path):
    path = tmp_path / "p.pack.json"
    one, two = JsonPack(path), JsonPack(path)
    assert one.get("x") is None
    one.put("x", {"v": 1})
    one.flush()
    two.put("y", 2)
    two.flush()  # merges: x survives
    assert json.loads(path.read_text()) == {"x": {"v": 1}, "y": 2}
    assert one.get("y") == 2  # re-read: the file changed since one last read it
    with cache_batch():
        assert json.loads(path.read_text()) == {"x": {"v": 1}, "y": 2}


@pytest.mark.parametrize("shape", [(700, 300), (300, 300), (40, 90)])
def test_gram_spectrum_equals_the_svd(shape):
    """The Gram path (numpy's symmetric product + eigh) gives the SVD's values and top directions
    on the smaller dimension, in either orientation."""
    import numpy as np

    from lminspect.weights.stats import spectrum_stats

    w = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    r = spectrum_stats(w, k=3)
    u, s, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    np.testing.assert_allclose(r["singular_values"], s, rtol=1e-10, atol=1e-12 * s[0])  # Gram: absolute in s[0]
    side = vt.T if shape[0] >= shape[1] else u  # directions on the smaller dimension
    np.testing.assert_allclose(np.abs((r["_top_vectors"] * side[:, :3]).sum(0)), 1, atol=1e-9)
