"""Data-parallel training under torchrun (2 CPU processes, gloo) matches one process, and resumes."""

from __future__ import annotations

import json

import pytest

from lminspect.train import TrainConfig, load_run, train

ARGS = ["--seq-len", "32", "--batch-size", "4", "--mini-batch-size", "1", "--set", "n_layer=1",
        "--set", "dim=32", "--set", "n_head=2", "--eval-every", "2", "--optimizer", "adamw", "--lr", "0.003"]


def test_ddp_matches_single_process_and_resumes(tmp_path, torchrun):
    single = train(TrainConfig(run_dir=str(tmp_path / "single"), seq_len=32, batch_size=4, mini_batch_size=1,
                               model_args={"n_layer": 1, "dim": 32, "n_head": 2}, eval_every=2,
                               optimizer="adamw", lr=0.003, max_steps=4, progress=False))
    ddp = tmp_path / "ddp"
    r = torchrun(["-m", "lminspect", "train", "--run-dir", str(ddp), "--max-steps", "2", *ARGS])
    assert r.returncode == 0, r.stderr[-2000:]
    r = torchrun(["-m", "lminspect", "train", "--run-dir", str(ddp), "--resume", "--max-steps", "4"])
    assert r.returncode == 0, r.stderr[-2000:]
    run = load_run(ddp)
    assert run.columns["step"] == [1, 2, 3, 4]
    assert run.columns["loss"] == pytest.approx(single.losses, rel=1e-5, abs=1e-6)
    assert run.series("val_loss", "step")[1] == pytest.approx(load_run(tmp_path / "single").series(
        "val_loss", "step")[1], rel=1e-5)
    assert json.loads((ddp / "config.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in (ddp / "checkpoints").glob("step_*")) == ["step_0000002", "step_0000004"]
