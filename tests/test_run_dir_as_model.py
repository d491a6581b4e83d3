"""A training run directory is accepted wherever a model is: it means its latest checkpoint."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from lminspect.cli import app

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from lminspect.train import TrainConfig, train

    root = tmp_path_factory.mktemp("runs")
    res = train(TrainConfig(exp="llamaish", run_dir=str(root / "run"), batch_size=2, seq_len=16,
                            max_steps=3, eval_every=0, save_every=2, progress=False,
                            model_args={"n_layer": 2, "dim": 32, "n_head": 4}))
    return root / "run", res.checkpoint


def test_open_store_means_the_latest_checkpoint(run_dir):
    from lminspect.weights import open_store

    run, ck = run_dir
    s = open_store(run)
    assert s.path == ck and s.name == f"run@{ck.name}" and s.tokenizer_json()
    assert ck.name == "step_0000003"


@pytest.mark.parametrize("args", [
    ["inspect", "{run}"],
    ["stats", "{run}", "-t", "layers.0.attn.q*", "--json"],
    ["generate", "{run}", "Once", "-n", "2"],
    ["stitch", "run", "{run}", "--plan", "0,1,1", "Once", "-n", "2"],
    ["stitch", "export", "{run}", "{tmp}/exported", "--plan", "0,1,1"],
    ["attention", "{run}", "Once upon", "--layer", "1", "--head", "0"],
    ["activations", "{run}", "--tokens", "32", "--seq-len", "16", "--out", "{tmp}/acts"],
])
def test_commands_accept_a_run_dir(run_dir, tmp_path, args, monkeypatch):
    monkeypatch.setenv("LMINSPECT_CACHE", str(tmp_path / "cache"))
    run, _ = run_dir
    r = CliRunner().invoke(app, [a.format(run=run, tmp=tmp_path) for a in args])
    assert r.exit_code == 0, r.output


def test_repl_accepts_a_run_dir(run_dir):
    import lminspect as li

    run, ck = run_dir
    assert li.open(run).path == ck


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_tui_accepts_a_run_dir(run_dir, tmp_path, anyio_backend, monkeypatch):
    from test_tui_helpers import wait_until

    from lminspect.tui.app import LMInspectApp

    monkeypatch.setenv("LMINSPECT_CACHE", str(tmp_path / "cache"))
    run, ck = run_dir
    app = LMInspectApp(str(run), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.store is not None, what="the run's checkpoint to open")
        await pilot.pause()
        assert app.store.path == ck and f"run@{ck.name}" in app.sub_title


def test_a_run_without_a_complete_checkpoint_is_one_line(run_dir, tmp_path):
    run, _ = run_dir
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    for ck in (broken / "checkpoints").glob("step_*"):
        (ck / "model.safetensors").unlink()
    r = CliRunner().invoke(app, ["inspect", str(broken)])
    assert r.exit_code == 2 and "run directory without a complete checkpoint" in r.output
