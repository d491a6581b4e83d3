"""lminspect.rundir: one definition of a run, its complete checkpoints, RUN@STEP and its state."""

from __future__ import annotations

import json
import shutil

import pytest

from lminspect import rundir
from lminspect.errors import UserError


@pytest.fixture
def run(tiny_llama_dir, tmp_path):
    """A run of three model checkpoints (copies of the tiny llama) with a stats log."""
    r = tmp_path / "run"
    for step in (2, 4, 6):
        shutil.copytree(tiny_llama_dir, r / "checkpoints" / f"step_{step:07d}")
    (r / "stats.jsonl").write_text("".join(json.dumps({"step": s, "tokens": 64 * s}) + "\n" for s in (2, 4, 6)))
    (r / "config.json").write_text(json.dumps({"status": "done"}))
    return r


def test_run_at_last_skips_a_damaged_checkpoint_like_open_store(run):
    from lminspect.weights import open_store

    newest = run / "checkpoints" / "step_0000006" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:200])  # a torn write
    assert rundir.checkpoint_problem(newest.parent, resumable=False) == "model.safetensors is truncated"
    last = rundir.resolve_ref(f"{run}@last")
    assert last.endswith("step_0000004") and rundir.resolve_ref(str(run)) == last
    assert open_store(run).path.name == "step_0000004"
    assert [c.step for c in rundir.list_checkpoints(run)] == [2, 4]
    assert rundir.list_checkpoints(run)[0].tokens == 128
    with pytest.raises(UserError, match="no checkpoint at step 6"):
        rundir.resolve_ref(f"{run}@6")


def test_run_at_nothing_is_refused(run):
    with pytest.raises(UserError, match="nothing after the '@'"):
        rundir.resolve_ref(f"{run}@")
    assert rundir.resolve_ref(f"{run}@first").endswith("step_0000002")


def test_resume_needs_the_trainer_state(run):
    assert rundir.latest_checkpoint(run) is None  # model folders only: nothing to resume from
    assert rundir.latest_checkpoint(run, resumable=False).name == "step_0000006"
    assert rundir.checkpoint_problem(run / "checkpoints" / "step_0000006") == "no trainer.safetensors"


def test_what_a_run_is_and_its_state(run, tiny_llama_dir):
    assert rundir.is_run_dir(run) and rundir.holds_checkpoints(run)
    assert not rundir.is_run_dir(tiny_llama_dir) and not rundir.holds_checkpoints(tiny_llama_dir)
    assert rundir.run_checkpoint(tiny_llama_dir) is None
    assert rundir.run_state(run) == "finished"
    (run / "config.json").write_text(json.dumps({"status": "running"}))
    assert rundir.run_state(run) == "running"
    (run / "config.json").write_text(json.dumps({"status": "interrupted"}))
    assert rundir.run_state(run) == "stopped"
