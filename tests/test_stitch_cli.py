"""CLI: stitch run/show/presets/sweep/export, attention, data make-mc (typer's CliRunner)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lminspect.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def _short_mc(path):
    rows = [
        {"ctx": "Once upon a time", "endings": ["there was.", "a model.", "the end.", "words"], "label": 0},
        {"ctx": "The weights were", "endings": ["small.", "long.", "many.", "story"], "label": 0},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_show_and_presets():
    r = invoke("stitch", "show", "--plan", "0-23,27-29")
    assert r.exit_code == 0, r.output
    assert "27 calls" in r.output and "24, 25, 26" in r.output
    r = invoke("stitch", "show", "--plan", "15r3", "--layers", "30")
    assert r.exit_code == 0 and "15 15 15" in r.output
    r = runner.invoke(app, ["stitch", "presets", "--layers", "30"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "skip_near_end_keep_last_two" in r.output and "plan on 30 layers" in r.output


@pytest.mark.parametrize(
    "args, needle",
    [
        (("stitch", "show", "--plan", "0-3,x7"), "bad plan item 'x7' at column 5"),
        (("stitch", "show", "--plan", "40", "--layers", "30"), "the model has 30 layers"),
        (("stitch", "show", "--plan", "missing.yaml"), "not found"),
    ],
)
def test_bad_plans_exit_2_one_line(args, needle):
    r = invoke(*args)
    assert r.exit_code == 2
    out = r.output.strip()
    assert needle in out and out.count("\n") == 0 and "Traceback" not in out


def test_run_default_command_and_compare(tiny_llama_dir):
    r = invoke("stitch", str(tiny_llama_dir), "--plan", "0,1r2", "Once", "-n", "4")
    assert r.exit_code == 0, r.output
    assert "Once" in r.output and "3 layer calls of 4" in r.output
    r = invoke("stitch", "run", str(tiny_llama_dir), "--plan", "skip:2", "Once", "-n", "3", "--compare")
    assert r.exit_code == 0, r.output
    assert "== baseline" in r.output and "== 0-1,3" in r.output
    r = invoke("stitch", str(tiny_llama_dir), "--plan", "9")
    assert r.exit_code == 2 and "the model has 4 layers" in r.output


def test_sweep_writes_table_json_csv(tiny_llama_dir, tmp_path):
    mc = _short_mc(tmp_path / "mc.jsonl")
    plans = tmp_path / "plans.toml"
    plans.write_text('[plans]\nbase = "all"\nshort = "0-1"\n')
    txt = tmp_path / "t.txt"
    txt.write_text("Once upon a time there was a little model. It read many books.\n")
    out = tmp_path / "res"
    r = invoke("stitch", "sweep", str(tiny_llama_dir), "--plans", str(plans), "--eval", str(mc), "--limit", "2",
               "--ppl-data", str(txt), "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "base" in r.output and "short" in r.output and "acc_norm" in r.output
    js = list(out.glob("*.json"))
    csvs = list(out.glob("*.csv"))
    assert len(js) == 1 and len(csvs) == 1
    data = json.loads(js[0].read_text())
    assert [row["plan"] for row in data["rows"]] == ["base", "short"]
    assert data["rows"][1]["layers_run"] == 2 and data["rows"][0]["ppl"] > 1
    assert csvs[0].read_text().splitlines()[0].startswith("plan,spec,layers_run")
    r = invoke("stitch", "sweep", str(tiny_llama_dir), "--eval", str(tmp_path / "nope.jsonl"))
    assert r.exit_code == 2 and "not found" in r.output


def test_export_cli(tiny_llama_dir, tmp_path):
    out = tmp_path / "exp"
    r = invoke("stitch", "export", str(tiny_llama_dir), str(out), "--plan", "0-1,1,3")
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 4 and cfg["lminspect_plan"] == "0-1,1,3"
    assert (out / "tokenizer.json").is_file() and (out / "model.safetensors").is_file()


def test_attention_heatmap_and_fft(tiny_llama_dir, tmp_path):
    import numpy as np

    out = tmp_path / "attn"
    r = invoke("attention", str(tiny_llama_dir), "Once upon a time", "--plan", "0,2", "--layer", "1",
               "--head", "2", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "██" not in r.output and "scale:" in r.output and "fft2" in r.output  # piped: a character ramp
    probs = np.load(out / "attn_probs.npy")
    fft = np.load(out / "attn_fft.npy")
    assert probs.shape[:2] == (2, 4) and probs.shape == fft.shape
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert np.allclose(np.triu(probs[0, 0], 1), 0.0)
    r = invoke("attention", str(tiny_llama_dir), "--head", "9")
    assert r.exit_code == 2 and "4 heads" in r.output


def test_data_make_mc(tmp_path):
    out = tmp_path / "cloze.jsonl"
    r = invoke("data", "make-mc", "builtin", "--out", str(out), "--n", "25", "--seed", "3")
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 25
    assert all(len(x["endings"]) == 4 and 0 <= x["label"] < 4 and x["ctx"] for x in rows)
    r = invoke("data", "make-mc", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "b.jsonl"))
    assert r.exit_code == 2 and "not found" in r.output
    r = invoke("data", "make-mc", "/nonexistent-corpus", "--out", str(tmp_path / "b.jsonl"))  # a path, not a hub id
    assert r.exit_code == 2 and "not found" in r.output


def test_help_mentions_conventions():
    r = invoke("stitch", "--help")
    assert r.exit_code == 0 and "INCLUSIVE" in r.output and "HALF-OPEN" in r.output
    r = invoke("stitch", "show", "--help")
    assert "INCLUSIVE" in r.output

