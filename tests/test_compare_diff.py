"""``lminspect diff``: known changes give known numbers; grown models compare their overlapping
block; tensors only in one model are listed; the CLI table, --by-layer, --json and errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from lminspect.cli import app
from lminspect.compare.diff import array_diff, diff_models, direction_overlap, match_tensors, overall
from lminspect.weights import open_store

pytestmark = pytest.mark.usefixtures("private_cache")


def test_scaled_layer_has_rel_change_one_and_nothing_else_moves(tiny_llama_dir, scaled_copy):
    a, b = open_store(tiny_llama_dir), open_store(scaled_copy)
    rows, m = diff_models(a, b)
    assert not m.only_a and not m.only_b and len(rows) == len(a.canonical_names())
    for r in rows:
        if r["name"].startswith("layers.2."):
            assert r["rel_change"] == pytest.approx(1.0, abs=1e-6), r["name"]
            assert r["cosine"] == pytest.approx(1.0, abs=1e-6)
            if "norm" not in r["name"]:  # matrices: same singular directions, twice the spread
                assert r["subspace_overlap"] == pytest.approx(1.0, abs=1e-6)
                assert r["top_cos"] == pytest.approx(1.0, abs=1e-6)
                assert r["d_std"] == pytest.approx(r["std_a"], rel=1e-5)
                assert r["d_stable_rank"] == pytest.approx(0.0, abs=1e-6)
                assert r["d_alpha"] == pytest.approx(0.0, abs=1e-6)
        else:
            assert r["rel_change"] == 0.0 and r["max_abs_diff"] == 0.0, r["name"]
            assert r["cosine"] == pytest.approx(1.0, abs=1e-6) and r["d_std"] == 0.0
    s = overall(rows)
    assert 0 < s["rel_change"] < 1 and s["tensors"] == len(rows)


def test_numbers_match_numpy():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 40)).astype(np.float32)
    b = a + 0.3 * rng.standard_normal((300, 40)).astype(np.float32)
    r = array_diff(a, b)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    assert r["rel_change"] == pytest.approx(np.linalg.norm(b64 - a64) / np.linalg.norm(a64), rel=1e-5)
    assert r["cosine"] == pytest.approx((a64 * b64).sum() / np.linalg.norm(a64) / np.linalg.norm(b64), rel=1e-6)
    assert r["max_abs_diff"] == pytest.approx(np.abs(b64 - a64).max(), rel=1e-6)
    # principal angles against numpy's SVD: the top-4 right singular subspaces
    ov = direction_overlap(a, b, k=4)
    va = np.linalg.svd(a64)[2][:4].T
    vb = np.linalg.svd(b64)[2][:4].T
    assert ov["subspace_overlap"] == pytest.approx(((va.T @ vb) ** 2).sum() / 4, rel=1e-4)
    assert ov["top_cos"] == pytest.approx(abs(va[:, 0] @ vb[:, 0]), rel=1e-4)


def test_chunked_stream_equals_one_pass(monkeypatch):
    import lminspect.compare.diff as d

    rng = np.random.default_rng(1)
    a = rng.standard_normal((64, 50)).astype(np.float32)
    b = rng.standard_normal((64, 50)).astype(np.float32)
    whole = d.array_diff(a, b)
    monkeypatch.setattr(d, "CHUNK", 128)  # many chunks, both the flat and the block (row) path
    assert d.array_diff(a, b) == pytest.approx(whole, rel=1e-6)
    assert d.array_diff(a[:40, :30], b[:40, :30]) == pytest.approx(
        d.array_diff(a[:40, :30].copy(), b[:40, :30].copy()), rel=1e-6)


def test_grown_model_compares_overlap_block_equal(tiny_llama_dir, tmp_path):
    from lminspect.grow.core import GrowSpec
    from lminspect.grow.io import grow_dir

    _, _, out = grow_dir(tiny_llama_dir, tmp_path / "grown", GrowSpec(layers=1, ffn=192))
    a, b = open_store(tiny_llama_dir), open_store(out)
    m = match_tensors(a, b)
    assert m.only_a == [] and m.only_b and all(n.startswith("layers.4.") for n in m.only_b)
    rows, _ = diff_models(a, b, directions=False)
    by = {r["name"]: r for r in rows}
    up = by["layers.0.mlp.up.weight"]
    assert up["match"] == "overlap 128x64 of 128x64 | 192x64" and up["shape"] == [128, 64]
    down = by["layers.3.mlp.down.weight"]
    assert down["match"].startswith("overlap 64x128")
    for r in rows:
        assert r["rel_change"] == 0.0, r["name"]


def test_diff_is_cached(tiny_llama_dir, scaled_copy, monkeypatch):
    import lminspect.compare.diff as d

    a, b = open_store(tiny_llama_dir), open_store(scaled_copy)
    first, _ = d.diff_models(a, b, names=["layers.2.attn.q.weight"])
    monkeypatch.setattr(d, "array_diff", lambda *a, **k: pytest.fail("recomputed"))
    again, _ = d.diff_models(a, b, names=["layers.2.attn.q.weight"])
    assert again == first


def test_cli_table_json_and_by_layer(tiny_llama_dir, scaled_copy):
    r = CliRunner().invoke(app, ["diff", str(tiny_llama_dir), str(scaled_copy), "--no-svd"])
    assert r.exit_code == 0, r.output
    assert "layers.2.attn.q.weight" in r.output and "overall rel_change" in r.output
    r = CliRunner().invoke(app, ["diff", str(tiny_llama_dir), str(scaled_copy), "--json", "--changed", "--no-svd"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert {x["name"] for x in lines[:-1]} == {n for n in open_store(tiny_llama_dir).canonical_names()
                                              if n.startswith("layers.2.")}
    assert lines[-1]["summary"]["tensors"] == len(lines) - 1
    r = CliRunner().invoke(app, ["diff", str(tiny_llama_dir), str(scaled_copy), "--by-layer", "rel_change",
                                 "--no-svd"])
    assert r.exit_code == 0, r.output
    row2 = next(x for x in r.output.splitlines() if x.strip().startswith("2 "))
    assert row2.split()[1:] == ["1"] * (len(row2.split()) - 1)  # every component of layer 2: 1
    assert "rel_change by layer" in r.output


@pytest.mark.parametrize(("args", "says"), [
    (["diff", "nope/a", "nope/b"], "nope/a: no such file or directory"),
    (["diff", "{a}", "{a}", "--tensor", "zzz*"], "no tensor of both models matches zzz*"),
    (["diff", "{a}", "{a}", "--by-layer", "bogus", "--no-svd"], "--by-layer 'bogus'"),
])
def test_cli_bad_input_is_one_line(tiny_llama_dir, args, says):
    args = [x.format(a=tiny_llama_dir) for x in args]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lminspect: error:") and says in lines[0], r.output


def test_repl_diff_returns_table(tiny_llama_dir, scaled_copy):
    import lminspect as li

    t = li.open(str(tiny_llama_dir)).diff(str(scaled_copy), svd=False)
    assert isinstance(t, li.Table) and "rel_change" in t.columns
    assert {r["name"] for r in t if r["rel_change"] > 0} == {r["name"] for r in t if r["name"].startswith("layers.2.")}
    by = li.open(str(tiny_llama_dir)).diff(li.open(str(scaled_copy)), svd=False, by_layer="rel_change")
    assert by["layer"] == [0, 1, 2, 3] and by["attn.q"] == [0.0, 0.0, pytest.approx(1.0), 0.0]


def test_run_dir_references(tiny_llama_dir, scaled_copy, tmp_path):
    from lminspect.compare.checkpoints import resolve_ref
    from lminspect.errors import UserError

    run = tmp_path / "run"
    for step, src in ((2, tiny_llama_dir), (4, scaled_copy)):
        shutil.copytree(src, run / "checkpoints" / f"step_{step:07d}")
    (run / "stats.jsonl").write_text('{"step": 2, "tokens": 256}\n{"step": 4, "tokens": 512}\n')
    assert resolve_ref(str(run)).endswith("step_0000004")
    assert resolve_ref(f"{run}@first").endswith("step_0000002")
    assert resolve_ref(f"{run}@2") == resolve_ref(f"{run}@first")
    with pytest.raises(UserError, match="no checkpoint at step 3"):
        resolve_ref(f"{run}@3")
    assert resolve_ref(str(tiny_llama_dir)) == str(tiny_llama_dir)
    r = CliRunner().invoke(app, ["diff", f"{run}@first", str(run), "--json", "--changed", "--no-svd"])
    assert r.exit_code == 0, r.output
    names = {json.loads(x).get("name") for x in r.stdout.splitlines()[:-1]}
    assert names and all(n.startswith("layers.2.") for n in names)


def test_long_tensors_keep_float64_accuracy():
    """A 1% perturbation of 600k values: cosine 0.99995 to 1e-9, as numpy in float64 (float32
    dots over long chunks were off by ~1e-3)."""
    rng = np.random.default_rng(3)
    a = (rng.standard_normal(600_000) * 0.02 + 0.01).astype(np.float32)
    b = (a * (1 + 0.01 * rng.standard_normal(a.size))).astype(np.float32)
    r = array_diff(a, b)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    assert r["cosine"] == pytest.approx((a64 @ b64) / np.linalg.norm(a64) / np.linalg.norm(b64), abs=1e-9)
    assert r["rel_change"] == pytest.approx(np.linalg.norm(b64 - a64) / np.linalg.norm(a64), rel=1e-9)
