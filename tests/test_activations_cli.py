"""``lminspect activations`` / ``activations-show`` / ``activations-diff`` through CliRunner, bad input included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lminspect.cli import app

runner = CliRunner()

BASE = ["--tokens", "200", "--seq-len", "32", "--batch-size", "4"]


def _run(*args: str):
    return runner.invoke(app, list(args))


def _one_line_error(r, *needles: str) -> None:
    assert r.exit_code == 2, (r.exit_code, r.output)
    err = r.stderr.strip()
    assert err.count("\n") == 0 and err.startswith("lminspect: error:"), err
    assert "Traceback" not in r.output
    for n in needles:
        assert n in err, err


@pytest.fixture(scope="module")
def baseline(tiny_llama_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "base"
    r = _run("activations", str(tiny_llama_dir), "--out", str(out), *BASE)
    assert r.exit_code == 0, r.output
    return out


def test_collect_show_diff(tiny_llama_dir, baseline, tmp_path):
    idx = json.loads((baseline / "index.json").read_text())
    assert idx["progress"]["tokens_done"] == 200 and idx["progress"]["complete"]
    assert idx["model"]["fingerprint"] and idx["plan_layers"] == [0, 1, 2, 3]
    r = _run("activations-show", str(baseline), "--kind", "mlp_hidden", "--examples", "1")
    assert r.exit_code == 0, r.output
    assert "mlp_hidden.3" in r.stdout and "resid_out.0" not in r.stdout
    st = tmp_path / "st"
    r = _run("activations", str(tiny_llama_dir), "--out", str(st), "--plan", "0,1,1,2,3", "--sites", "resid", *BASE)
    assert r.exit_code == 0, r.output
    r = _run("activations-diff", str(st), str(baseline))
    assert r.exit_code == 0, r.output
    assert "resid_out.2" in r.stdout and "1/2" in r.stdout  # position 2 ran layer 1 vs layer 2


def test_rerun_complete_is_noop(tiny_llama_dir, baseline):
    before = (baseline / "stats.npz").stat().st_mtime_ns
    r = _run("activations", str(tiny_llama_dir), "--out", str(baseline), *BASE)
    assert r.exit_code == 0, r.output
    assert "already complete" in r.stderr
    assert (baseline / "stats.npz").stat().st_mtime_ns == before


def test_unknown_site_lists_valid(tiny_llama_dir, tmp_path):
    r = _run("activations", str(tiny_llama_dir), "--out", str(tmp_path / "x"), "--sites", "resid,mlp_in", *BASE)
    _one_line_error(r, "'mlp_in'", "resid_out", "mlp_hidden", "attn_out")
    r = _run("activations", str(tiny_llama_dir), "--out", str(tmp_path / "x"), "--sites", "resid_out.9", *BASE)
    _one_line_error(r, "0..3")
    assert not (tmp_path / "x").exists()


def test_dataset_without_text_field_names_fields(tiny_llama_dir, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"content": "hello there", "label": 1}) for _ in range(5)) + "\n")
    r = _run("activations", str(tiny_llama_dir), "--out", str(tmp_path / "x"), "--data", str(data), *BASE)
    _one_line_error(r, "'text'", "content", "label")
    assert not (tmp_path / "x").exists()


def test_tokens_more_than_dataset(tiny_llama_dir, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"text": "the model read many books"}) for _ in range(3)) + "\n")
    out = tmp_path / "x"
    r = _run("activations", str(tiny_llama_dir), "--out", str(out), "--data", str(data), "--tokens", "100000")
    assert r.exit_code == 0, r.output
    assert "has only" in r.stderr and "asked for 100000" in r.stderr
    idx = json.loads((out / "index.json").read_text())
    done = idx["progress"]["tokens_done"]
    assert 0 < done < 100 and idx["progress"]["complete"] and idx["progress"]["exhausted"]


def test_other_models_dir_refused(tiny_llama_dir, tiny_gpt2_dir, baseline, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in baseline.iterdir() if p.name != ".lminspect.lock"}
    r = _run("activations", str(tiny_gpt2_dir), "--out", str(baseline), *BASE)
    _one_line_error(r, "another model", "--overwrite")
    # same model, other settings: refused too
    r = _run("activations", str(tiny_llama_dir), "--out", str(baseline), "--sites", "resid", *BASE)
    _one_line_error(r, "different settings", "sites")
    assert {p.name: p.stat().st_mtime_ns for p in baseline.iterdir() if p.name != ".lminspect.lock"} == before
    # a foreign non-empty directory is not ours to fill
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    r = _run("activations", str(tiny_llama_dir), "--out", str(foreign), *BASE)
    _one_line_error(r, "not an activations results dir")
    # --overwrite replaces another model's statistics
    other = tmp_path / "other"
    r = _run("activations", str(tiny_gpt2_dir), "--out", str(other), *BASE)
    assert r.exit_code == 0, r.output
    r = _run("activations", str(tiny_llama_dir), "--out", str(other), "--overwrite", *BASE)
    assert r.exit_code == 0, r.output
    assert json.loads((other / "index.json").read_text())["model"]["path"] == str(Path(tiny_llama_dir).resolve())


def test_resume_via_cli(tiny_llama_dir, baseline, tmp_path):
    out = tmp_path / "r"
    r = _run("activations", str(tiny_llama_dir), "--out", str(out), "--max-batches", "1", *BASE)
    assert r.exit_code == 0 and "partial" in r.stderr, r.output
    r = _run("activations", str(tiny_llama_dir), "--out", str(out), *BASE)
    assert r.exit_code == 0 and "complete" in r.stderr, r.output
    import numpy as np

    from lminspect.activations import load

    a, b = load(out), load(baseline)
    np.testing.assert_allclose(a["resid_out.3"].kurtosis, b["resid_out.3"].kurtosis, rtol=1e-12)


def test_load_errors(tmp_path):
    r = _run("activations-show", str(tmp_path / "nope"))
    _one_line_error(r, "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "index.json").write_text("{not json")
    r = _run("activations-show", str(tmp_path / "bad"))
    _one_line_error(r, "index.json")


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom typer.testing import CliRunner\nfrom lminspect.cli import app\n"
            "r = CliRunner().invoke(app, ['activations', '--help'])\nassert r.exit_code == 0, r.output\n"
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.stdout.strip().splitlines()[-1] == "False", r.stdout + r.stderr


def test_diff_warns_about_different_collections(tiny_llama_dir, baseline, tmp_path):
    other = tmp_path / "other"
    r = _run("activations", str(tiny_llama_dir), "--out", str(other), "--plan", "0,1,1,2,3", "--sites", "resid",
             "--tokens", "96", "--seq-len", "16", "--batch-size", "2")
    assert r.exit_code == 0, r.output
    r = _run("activations-diff", str(other), str(baseline))
    assert r.exit_code == 0, r.output
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("lminspect: warning:")]
    assert any("different token counts" in w for w in warnings), r.stderr
    assert any("different sequence length: A 16 vs B 32" in w for w in warnings), r.stderr
    assert "site (matched by plan position)" in r.stdout
    r = _run("activations-diff", str(baseline), str(baseline))
    assert r.exit_code == 0 and "warning" not in r.stderr and "matched by plan" not in r.stdout


def test_show_saves_a_png(baseline, tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    png = tmp_path / "acts.png"
    r = _run("activations-show", str(baseline), "--save", str(png))
    assert r.exit_code == 0, r.output
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 300
    r = _run("activations-show", str(baseline), "--save", str(png))
    _one_line_error(r, "exists", "--overwrite")
