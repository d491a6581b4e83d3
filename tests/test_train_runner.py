"""train.runner: the run-dir workflow (lock, resume checks, the batch's "finished") the CLI, the REPL
and session scripts share."""

from __future__ import annotations

import textwrap

import pytest
from typer.testing import CliRunner

from lminspect.cli import app
from lminspect.errors import UserError
from lminspect.runlock import run_dir_lock
from lminspect.train import TrainConfig, train
from lminspect.train.runner import batch_stage, is_finished

pytestmark = pytest.mark.xdist_group("reliability")

TINY = dict(exp="gpt2ish", batch_size=2, seq_len=16, eval_every=0, progress=False,
            model_args={"n_layer": 1, "dim": 16, "n_head": 2})


def test_a_session_script_into_a_locked_run_dir_gets_the_cli_refusal(tmp_path):
    run = tmp_path / "run"
    script = tmp_path / "trainer.py"
    script.write_text(textwrap.dedent(f"""
        from lminspect.train import TrainConfig, train
        train(TrainConfig(run_dir={str(run)!r}, max_steps=1, **{TINY!r}))
    """))
    runner = CliRunner()
    with run_dir_lock(run):  # another owner (flock: a second open of the file conflicts, even in-process)
        cli = runner.invoke(app, ["train", "--exp", "gpt2ish", "--max-steps", "1", "--run-dir", str(run)])
        session = runner.invoke(app, ["session", "run", str(script)])
        with pytest.raises(UserError) as lib:
            train(TrainConfig(run_dir=str(run), max_steps=1, **TINY))
    for r in (cli, session):
        assert r.exit_code == 2, r.output
    assert cli.output.strip().splitlines() == session.output.strip().splitlines()
    lines = cli.output.strip().splitlines()
    assert len(lines) == 1 and "in use by process" in lines[0] and lines[0] == lib.value.one_line()


def test_library_resume_refuses_contradicting_settings_and_the_batch_stages(tmp_path):
    run = tmp_path / "run"
    assert batch_stage(run, max_steps=2) == "new"
    train(TrainConfig(run_dir=str(run), max_steps=2, save_every=2, **TINY))
    assert is_finished(run, max_steps=2) and not is_finished(run, max_steps=3)
    assert batch_stage(run, max_steps=2) == "finished" and batch_stage(run, max_steps=3) == "resume"
    with pytest.raises(UserError, match="--seq-len 32 .*contradict"):
        train(TrainConfig(run_dir=str(run), resume=True, max_steps=3, **{**TINY, "seq_len": 32}))
    res = train(TrainConfig(run_dir=str(run), resume=True, max_steps=3, **TINY))
    assert res.step == 3 and res.status == "done"
