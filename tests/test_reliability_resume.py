"""Resume picks the newest complete checkpoint (a damaged one is skipped with a warning),
ignores a ``checkpoints/latest`` that points outside the run, refuses a checkpoint of another
shape naming the tensor, and a killed run's temporaries are removed by the next owner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lminspect.cli import app
from lminspect.errors import UserError
from lminspect.train import TrainConfig, train
from lminspect.train.checkpoint import latest_checkpoint

pytestmark = pytest.mark.xdist_group("reliability")

TINY = {"n_layer": 2, "dim": 32, "n_head": 2}


def cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(exp="gpt2ish", run_dir=str(tmp_path / "run"), batch_size=2, seq_len=16, max_steps=4,
                eval_every=0, save_every=2, keep_checkpoints=3, model_args=dict(TINY), optimizer="adamw",
                lr=3e-3, progress=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def run(tmp_path):
    train(cfg(tmp_path))
    return tmp_path / "run"


def test_damaged_newest_checkpoint_falls_back_with_a_warning(run, capsys):
    ck = run / "checkpoints"
    assert latest_checkpoint(run).name == "step_0000004"
    data = (ck / "step_0000004" / "trainer.safetensors").read_bytes()
    (ck / "step_0000004" / "trainer.safetensors").write_bytes(data[: len(data) // 2])  # torn write
    assert latest_checkpoint(run, warn=True).name == "step_0000002"
    err = capsys.readouterr().err
    assert "step_0000004 is damaged" in err and "falling back to step_0000002" in err
    res = train(cfg(run.parent, resume=True, max_steps=5))
    assert res.step == 5


def test_latest_pointing_outside_the_run_is_ignored(run, capsys):
    (run / "checkpoints" / "latest").write_text("../../../etc\n")
    assert latest_checkpoint(run, warn=True).name == "step_0000004"
    assert "not a checkpoint of this run; ignored" in capsys.readouterr().err


def test_checkpoint_of_another_shape_is_refused(run):
    conf = json.loads((run / "config.json").read_text())
    conf["train"]["model_args"]["dim"] = 64  # as if the run had been trained at another width
    (run / "config.json").write_text(json.dumps(conf))
    with pytest.raises(UserError, match=r"does not fit this model: .* is \(\d+, 32\) in the checkpoint"):
        # (the library, like the CLI, refuses settings that contradict the saved run: give the saved width)
        train(cfg(run.parent, resume=True, max_steps=5, model_args={**TINY, "dim": 64}))


def test_killed_runs_temporaries_are_removed_by_the_next_owner(run):
    (run / "checkpoints" / ".step_0000006.999999.abc.tmp").mkdir()
    (run / "checkpoints" / ".step_0000006.999999.abc.tmp" / "model.safetensors").write_bytes(b"\0" * 100)
    (run / ".stats.jsonl.999999.x.tmp").write_text("{}")
    r = CliRunner().invoke(app, ["train", "--resume", "--run-dir", str(run), "--max-steps", "5"])
    assert r.exit_code == 0, r.output
    assert [p.name for p in run.rglob(".*") if p.name != ".lminspect.lock"] == []


def test_resume_refuses_contradicting_flags(run):
    r = CliRunner().invoke(app, ["train", "--resume", "--run-dir", str(run), "--lr", "0.5", "--seq-len", "8"])
    assert r.exit_code == 2
    line = r.output.strip()
    assert "--lr 0.5" in line and "--seq-len 8" in line and "contradict" in line and len(line.splitlines()) == 1


def test_resume_with_every_checkpoint_damaged_is_refused(run):
    for ck in (run / "checkpoints").glob("step_*"):
        (ck / "trainer.safetensors").write_bytes(b"\0" * 4)
    before = (run / "stats.jsonl").read_bytes()
    with pytest.raises(UserError, match="no complete checkpoint"):
        train(cfg(run.parent, resume=True, max_steps=5))
    assert (run / "stats.jsonl").read_bytes() == before  # the log was not truncated to step 0
