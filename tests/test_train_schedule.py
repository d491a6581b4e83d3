"""Training options issue 18 added: lr schedules (logged per step, plotted, honoured by --resume),
``train --init-from`` (a run dir or a grown model dir), and ``train --exp A --exp B --run-root``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lminspect.cli import app
from lminspect.train import TrainConfig, load_run, train
from lminspect.train.schedule import lr_factor

TINY_ARGS = {"n_layer": 1, "dim": 32, "n_head": 2}
TINY = ["--set", "n_layer=1", "--set", "dim=32", "--set", "n_head=2", "--seq-len", "16", "--batch-size", "2",
        "--eval-every", "0"]
runner = CliRunner()


def _cfg(run_dir, **kw) -> TrainConfig:
    base = dict(exp="gpt2ish", run_dir=str(run_dir), batch_size=2, seq_len=16, max_steps=8, eval_every=0,
                save_every=4, model_args=TINY_ARGS, optimizer="adamw", lr=1e-2, progress=False)
    return TrainConfig(**{**base, **kw})


def test_lr_factor_shapes():
    assert [lr_factor("constant", s, warmup=0, total=10) for s in (1, 5, 10)] == [1.0, 1.0, 1.0]
    assert [lr_factor("cosine", s, warmup=4, total=10) for s in (1, 2, 4)] == [0.25, 0.5, 1.0]
    assert lr_factor("cosine", 10, warmup=4, total=10, min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor("cosine", 7, warmup=4, total=10, min_ratio=0.0) == pytest.approx(0.5)
    assert lr_factor("linear", 7, warmup=4, total=10, min_ratio=0.0) == pytest.approx(0.5)
    assert lr_factor("linear", 10, warmup=0, total=10, min_ratio=0.2) == pytest.approx(0.2)


def test_schedule_logged_recorded_and_resumed_exactly(tmp_path):
    kw = dict(lr_schedule="cosine", warmup_steps=2, min_lr_ratio=0.0)
    train(_cfg(tmp_path / "full", **kw))
    full = load_run(tmp_path / "full")
    want = [1e-2 * lr_factor("cosine", s, warmup=2, total=8, min_ratio=0.0) for s in range(1, 9)]
    assert full.columns["lr"] == pytest.approx(want)
    saved = json.loads((tmp_path / "full" / "config.json").read_text())["train"]
    assert (saved["lr_schedule"], saved["warmup_steps"], saved["min_lr_ratio"]) == ("cosine", 2, 0.0)

    def stop_at_4(row):
        if row["step"] == 4:
            raise KeyboardInterrupt

    assert train(_cfg(tmp_path / "cut", **kw), on_step=stop_at_4).status == "interrupted"
    r = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "cut"), "--resume"])
    assert r.exit_code == 0, r.output
    cut = load_run(tmp_path / "cut")
    assert cut.columns["lr"] == pytest.approx(want)
    assert cut.columns["loss"] == pytest.approx(full.columns["loss"], rel=1e-5)

    r = runner.invoke(app, ["plot", str(tmp_path / "full"), "--metric", "lr", "--x", "steps", "--width", "60",
                            "--height", "12"])
    assert r.exit_code == 0 and "learning rate" in r.output


def test_schedule_bad_input_is_one_line(tmp_path):
    r = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "x"), "--lr-schedule", "cosine", *TINY])
    assert r.exit_code == 2 and "--max-steps" in r.stderr and r.stderr.count("\n") == 1
    r = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "x"), "--lr-schedule", "step", "--max-steps", "2",
                            *TINY])
    assert r.exit_code == 2 and "constant, cosine, linear" in r.stderr
    assert not (tmp_path / "x" / "stats.jsonl").exists()


def test_init_from_a_run_and_a_grown_model(tmp_path):
    train(_cfg(tmp_path / "a", max_steps=30, save_every=0, lr=2e-2))
    a = load_run(tmp_path / "a")
    r = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "b"), "--init-from", str(tmp_path / "a"),
                            "--max-steps", "1", "--lr", "1e-6", "--optimizer", "adamw", "--seq-len", "16",
                            "--batch-size", "2", "--eval-every", "0"])
    assert r.exit_code == 0, r.output
    b = load_run(tmp_path / "b")
    assert b.config["train"]["init_from"] == str(tmp_path / "a")
    assert b.columns["loss"][0] < a.columns["loss"][0] - 0.5  # starts where A got to, not from scratch
    assert b.columns["loss"][0] == pytest.approx(sum(a.columns["loss"][-5:]) / 5, abs=0.5)

    r = runner.invoke(app, ["grow", str(tmp_path / "a"), "--layers", "+1", "--out", str(tmp_path / "g")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "c"), "--init-from", str(tmp_path / "g"),
                            "--max-steps", "1", "--lr", "1e-6", "--optimizer", "adamw", "--seq-len", "16",
                            "--batch-size", "2", "--eval-every", "0"])
    assert r.exit_code == 0, r.output
    c = load_run(tmp_path / "c")
    assert c.config["n_params"] > a.config["n_params"]  # the grown shape, not the experiment's default
    assert c.columns["loss"][0] == pytest.approx(b.columns["loss"][0], abs=0.05)  # growth kept the function
    r = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "d"), "--init-from", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "--init-from" in r.stderr


def test_batch_of_experiments_resumes_the_interrupted_and_plots_the_diff(tmp_path):
    root = tmp_path / "cmp"
    args = ["train", "--exp", "gpt2ish", "--exp", "value_norm", "--run-root", str(root), "--max-steps", "6",
            "--save-every", "3", "--optimizer", "adamw", "--lr", "0.01", *TINY]

    def stop_at_3(row):
        if row["step"] == 3:
            raise KeyboardInterrupt

    cut = TrainConfig(exp="value_norm", run_dir=str(root / "value_norm"), batch_size=2, seq_len=16, max_steps=6,
                      eval_every=0, save_every=3, model_args=TINY_ARGS, optimizer="adamw", lr=0.01, progress=False)
    assert train(cut, on_step=stop_at_3).status == "interrupted"
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert f"{root / 'value_norm'}: resuming" in r.stderr
    assert "train loss - baseline (gpt2ish)" in r.stdout and "value_norm" in r.stdout
    g, v = load_run(root / "gpt2ish"), load_run(root / "value_norm")
    assert len(g) == len(v) == 6 and g.status == v.status == "done"
    assert v.config["train"]["seed"] == g.config["train"]["seed"]
    assert g.config["train"]["data"] == v.config["train"]["data"]
    r = runner.invoke(app, args)  # both finished: nothing to train, the diff again
    assert r.exit_code == 0 and r.stdout.count("already finished") == 2
    r = runner.invoke(app, ["train", "--exp", "gpt2ish", "--exp", "value_norm", "--max-steps", "2"])
    assert r.exit_code == 2 and "--run-root" in r.stderr
