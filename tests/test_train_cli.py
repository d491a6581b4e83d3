"""`lminspect train / exp` through typer's CliRunner."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from lminspect.cli import app

TINY = ["--set", "n_layer=1", "--set", "dim=32", "--set", "n_head=2", "--seq-len", "16", "--batch-size", "2"]


def test_train_cli_run_and_resume(tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--exp", "gpt2ish", "--run-dir", str(run), "--max-steps", "2",
                                 "--eval-every", "0", *TINY])
    assert r.exit_code == 0, r.output
    assert "step 2" in r.output
    conf = json.loads((run / "config.json").read_text())
    assert conf["train"]["model_args"] == {"n_layer": 1, "dim": 32, "n_head": 2}
    assert conf["train"]["optimizer"] == "adagrad" and conf["train"]["lr"] == 6e-4  # lmplay defaults
    r = CliRunner().invoke(app, ["train", "--run-dir", str(run), "--resume", "--max-steps", "3"])
    assert r.exit_code == 0, r.output
    assert len((run / "stats.jsonl").read_text().splitlines()) == 3


def test_exp_list_and_describe():
    r = CliRunner().invoke(app, ["exp", "list", "--no-plugins"])
    assert r.exit_code == 0 and "gpt2ish" in r.output and "llamaish" in r.output
    r = CliRunner().invoke(app, ["exp", "describe", "value_norm"])
    assert r.exit_code == 0 and "LayerNorm" in r.output
    r = CliRunner().invoke(app, ["train", "--exp", "gpt2ish", "--describe"])
    assert r.exit_code == 0 and "lmplay" in r.output


def test_unknown_experiment_exits_2_with_one_line(tmp_path):
    r = CliRunner().invoke(app, ["train", "--exp", "nope", "--run-dir", str(tmp_path / "x")])
    assert r.exit_code == 2
    assert "unknown experiment 'nope'; known experiments: gpt2ish" in r.output
    assert not (tmp_path / "x").exists()


def test_bad_learning_rate_is_one_line_exit_2(tmp_path):
    r = CliRunner().invoke(app, ["train", "--exp", "gpt2ish", "--lr", "-1", "--max-steps", "1",
                                 "--run-dir", str(tmp_path / "run")])
    assert r.exit_code == 2 and "--lr -1.0: must be positive" in r.output
    assert not (tmp_path / "run").exists()


def test_train_on_a_hub_style_dataset_through_datasets(tmp_path, monkeypatch):
    """``--data hf:...`` streams through the real ``datasets`` (a local folder laid out like a hub
    dataset repo stands in for the download), and the run records where it got to."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # read at import
    (tmp_path / "repo" / "data").mkdir(parents=True)
    text = "def f(x):\n    return x * 2  # doubles its argument, as the docstring says\n" * 8
    rows = [json.dumps({"text": f"# document {i}\n{text}"}) for i in range(40)]
    (tmp_path / "repo" / "data" / "train.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--exp", "gpt2ish", "--run-dir", str(run), "--max-steps", "2",
                                 "--eval-every", "0", "--data", f"hf:{tmp_path / 'repo'}", *TINY])
    assert r.exit_code == 0, r.output
    assert len((run / "stats.jsonl").read_text().splitlines()) == 2
    assert json.loads((run / "config.json").read_text())["train"]["data"] == f"hf:{tmp_path / 'repo'}"
