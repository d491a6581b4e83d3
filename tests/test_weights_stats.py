"""Statistics: exact moments vs numpy, spectra vs numpy SVD, power-law alpha, disk cache, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lminspect.cli import app
from lminspect.weights import open_store
from lminspect.weights.safetensors_format import write_safetensors
from lminspect.weights.stats import CHUNK, array_stats, spectrum_stats


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LMINSPECT_CACHE", str(tmp_path / "cache"))


def test_moments_exact_across_chunks():
    rng = np.random.default_rng(0)
    x = (rng.standard_t(4, size=3 * CHUNK + 17) * 0.02 + 1.0).astype(np.float32)
    r = array_stats(x)
    x64 = x.astype(np.float64)
    d = x64 - x64.mean()
    assert r["numel"] == x.size
    assert r["mean"] == pytest.approx(x64.mean(), rel=1e-6)
    assert r["std"] == pytest.approx(x64.std(), rel=1e-5)
    assert r["rms"] == pytest.approx(np.sqrt((x64**2).mean()), rel=1e-6)
    assert r["kurtosis"] == pytest.approx((d**4).mean() / (d**2).mean() ** 2 - 3, rel=1e-3)
    assert (r["min"], r["max"]) == (float(x.min()), float(x.max()))
    assert r["absmax"] == float(np.abs(x).max())
    assert sum(r["hist"]) == x.size and r["sampled"] is False


def test_near_zero_and_nonfinite():
    x = np.array([0.0, 0.0, 1.0, -2.0, np.nan, np.inf], np.float32)
    r = array_stats(x)
    assert r["nonfinite"] == 2 and r["frac_near_zero"] == pytest.approx(0.5)
    assert r["absmax"] == 2.0


def test_spectrum_matches_numpy():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((120, 80)).astype(np.float32)
    r = spectrum_stats(w)
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    np.testing.assert_allclose(r["singular_values"], s, rtol=1e-4)
    assert r["stable_rank"] == pytest.approx((s**2).sum() / s[0] ** 2, rel=1e-4)
    p = s / s.sum()
    assert r["effective_rank"] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-4)


def test_store_stats_cached(tmp_path):
    p = tmp_path / "m.safetensors"
    write_safetensors(p, {"w": np.random.rand(64, 32).astype(np.float32), "b": np.ones(5, np.float32)})
    s = open_store(p)
    r1 = s.stats("w")
    files = list((tmp_path / "cache" / "stats").glob("*.json"))
    assert len(files) == 1
    assert s.stats("w") == r1 and r1["shape"] == [64, 32] and "alpha" in r1 or "stable_rank" in r1
    assert "singular_values" not in s.stats("b")


def test_cli_stats_json(tiny_llama_dir):
    r = CliRunner().invoke(app, ["stats", str(tiny_llama_dir), "--tensor", "layers.0.attn.*", "--json", "--no-svd"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert sorted(row["canonical"] for row in rows) == sorted(f"layers.0.attn.{p}.weight" for p in "qkvo")
    assert all("singular_values" not in row for row in rows)
    r = CliRunner().invoke(app, ["stats", str(tiny_llama_dir), "-t", "model.norm.weight"])
    assert r.exit_code == 0 and "norm" in r.output
    r = CliRunner().invoke(app, ["stats", str(tiny_llama_dir), "-t", "nothing*"])
    assert r.exit_code == 2 and "no tensor matches" in r.output


def test_cli_inspect_and_help(tiny_gpt2_dir):
    r = CliRunner().invoke(app, ["inspect", str(tiny_gpt2_dir)])
    assert r.exit_code == 0, r.output
    assert "layers.0.attn.q.weight" in r.output.replace("\n", "") or "c_attn" in r.output
    assert "parameters" in r.output
    for cmd in ("inspect", "stats", "convert", "fetch"):
        h = CliRunner().invoke(app, [cmd, "--help"])
        assert h.exit_code == 0 and "Usage" in h.output


def test_cli_convert_bad_dtype(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"GGUF")
    r = CliRunner().invoke(app, ["convert", str(p), str(tmp_path / "out"), "--dtype", "int3"])
    assert r.exit_code == 2 and "--dtype" in r.output


def test_fetch_unknown_and_unfetched(tmp_path):
    from lminspect.errors import UserError

    r = CliRunner().invoke(app, ["fetch", "nosuchmodel"])
    assert r.exit_code == 2 and "unknown model" in r.output
    with pytest.raises(UserError, match="not fetched"):
        open_store("smollm2")  # LMINSPECT_CACHE points at an empty temp dir


def test_numba_and_fallback_paths_agree(monkeypatch):
    """The optional compiled kernel ([stats] extra) and the numpy/torch fallback give the same statistics."""
    import numpy as np

    from lminspect.weights import stats, stats_kernels

    assert stats_kernels.kernels() is not None, "numba (dev extra) should be installed for the tests"
    rng = np.random.default_rng(0)
    a = (rng.standard_t(5, size=600_000) * 0.02 + 0.001).astype(np.float32)
    a[[7, 300_001]] = (np.nan, -np.inf)  # one chunk with nonfinite values on each path
    cases = [a, -np.abs(a) - 1, np.abs(a) + 1, a.astype(np.float16)]  # mixed signs, all <0, all >0, fp16
    fast = [stats.array_stats(x, workers=w) for x in cases for w in (1, 2)]
    monkeypatch.setattr(stats_kernels, "_KERNELS", False)
    slow = [stats.array_stats(x, workers=w) for x in cases for w in (1, 2)]
    for f, s in zip(fast, slow, strict=True):
        for key in ("mean", "std", "rms", "absmax"):
            assert np.isclose(f[key], s[key], rtol=1e-5, atol=1e-9), key
        assert (f["min"], f["max"], f.get("nonfinite")) == (s["min"], s["max"], s.get("nonfinite"))
        assert np.isclose(f["kurtosis"], s["kurtosis"], rtol=1e-3)
        assert f["hist"] == s["hist"] and f["frac_near_zero"] == s["frac_near_zero"]
    finite = a[np.isfinite(a)].astype(np.float64)
    assert fast[0]["nonfinite"] == 2 and fast[0]["std"] == pytest.approx(finite.std(), rel=1e-6)
    assert (fast[0]["min"], fast[0]["max"]) == (finite.min(), finite.max())


def test_float_extremes_from_bit_keys():
    """The compiled scan's min/max come from int32/uint32 bit extremes; check every sign case."""
    from lminspect.weights.stats_kernels import float_extremes

    for vals in ([1.5, 2.0, 0.0], [-1.5, -2.0, -0.5], [-3.0, 0.5, 2.5], [-0.0, 0.0], [1e-45, -1e-45], [np.inf, 1.0]):
        v = np.array(vals, np.float32)
        i, u = v.view(np.int32).astype(np.int64), v.view(np.uint32).astype(np.int64)
        got = float_extremes(int(i.min()), int(i.max()), int(u.min()), int(u.max()))
        if not np.isfinite(v).all():
            assert got is None
        else:
            assert got == (float(v.min()), float(v.max())), vals


def test_compiled_histogram_equals_numpy():
    """The SIMD histogram settles only values near a bin boundary against numpy's edges;
    its counts must equal np.histogram's, also when the edges are too coarse for that
    (a large offset against a tiny range: the edge-table path)."""
    from lminspect.weights import stats_kernels

    k = stats_kernels.kernels()
    rng = np.random.default_rng(3)
    samples = [
        rng.standard_normal(200_003).astype(np.float32),
        (rng.standard_t(3, 100_000) * 0.02 + 0.3).astype(np.float32),
        np.linspace(-1, 1, 4097, dtype=np.float32),  # many values exactly on edges
        rng.integers(-3, 4, 50_000).astype(np.float32),
        # float32 edges 1.5 ULP apart: they stray up to 1/3 bin from even spacing
        (np.float32(1000) + rng.integers(0, 97, 5_000).astype(np.float32) * np.float32(2.0**-14)).astype(np.float32),
    ]
    for x in samples:
        lo, hi = float(x.min()), float(x.max())
        want, edges = np.histogram(x, bins=64, range=(lo, hi))
        near = np.float32(0.01)
        got, nz = k.hist(x, edges, near)
        assert got.tolist() == want.tolist(), (lo, hi)
        assert nz == int(np.count_nonzero(np.abs(x) <= near))
        assert k.hist_table(x, edges).tolist() == want.tolist()


def test_range_too_small_for_float32_bins():
    """Values a few ULPs apart: numpy cannot make 64 float32 bins; the stats still come out."""
    x = np.ones(1000, np.float32)
    x[::7] = np.nextafter(np.float32(1), np.float32(2))
    r = array_stats(x)
    assert sum(r["hist"]) == 1000 and r["min"] == 1.0 and r["max"] > 1.0


def test_stats_progress_stages(tmp_path):
    """A computation reports its stages (the TUI shows them); a cache hit reports none."""
    p = tmp_path / "m.safetensors"
    write_safetensors(p, {"w": np.random.rand(64, 32).astype(np.float32)})
    s = open_store(p)
    stages: list[str] = []
    s.stats("w", progress=stages.append)
    assert stages == ["moments and histogram over 2,048 values", "singular values: eigenvalues of the 32x32 Gram matrix"]
    stages.clear()
    s.stats("w", progress=stages.append)
    assert stages == []


def test_by_layer_groups_layer_weights_in_block_order():
    from lminspect.errors import UserError
    from lminspect.weights.stats import by_layer

    rows = [{"canonical": f"layers.{i}.{c}.weight", "alpha": 2.0 + i, "std": 0.1} for i in (1, 0) for c in
            ("mlp.down", "attn.q", "attn_norm")] + [
        {"canonical": "layers.0.attn.q.bias", "alpha": 9.0},  # biases are left out
        {"canonical": "embed.tokens.weight", "alpha": 7.0},  # not a layer
    ]
    for r in rows:
        if "attn_norm" in r["canonical"]:
            r.pop("alpha")  # 1-D: no spectrum
    layers, cols = by_layer(rows, "alpha")
    assert layers == [0, 1] and list(cols) == ["attn.q", "mlp.down"]  # attn_norm has no alpha: dropped
    assert cols["attn.q"] == [2.0, 3.0]
    assert list(by_layer(rows, "std")[1]) == ["attn_norm", "attn.q", "mlp.down"]
    with pytest.raises(UserError, match="choose one of"):
        by_layer(rows, "nope")


def test_cli_stats_by_layer(tiny_llama_dir):
    r = CliRunner().invoke(app, ["stats", str(tiny_llama_dir), "--by-layer", "stable_rank"])
    assert r.exit_code == 0, r.output
    out = r.output
    assert "stable_rank by layer" in out and "attn.q" in out and "mlp.down" in out
    assert out.count("stable_rank by layer") == 2  # the table's title and the figure's
    r = CliRunner().invoke(app, ["stats", str(tiny_llama_dir), "--by-layer", "alpha", "--no-svd"])
    assert r.exit_code == 2 and "--by-layer 'alpha'" in r.output and len(r.output.strip().splitlines()) == 1
