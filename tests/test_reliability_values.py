"""Values that used to be accepted silently now get one line: a warning where going on is right
(huge thread counts, broken side files, NaN block scales, a resume with no checkpoint yet), a
refusal where the result would be wrong (another family under --init-from, a garbage checkpoint
config, a GGUF whose conversion could not load, ``RUN@``)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lminspect.cli import app
from lminspect.errors import UserError
from lminspect.train import TrainConfig, train

pytestmark = pytest.mark.xdist_group("reliability")
sys.path.insert(0, str(Path(__file__).parent))

TINY = {"n_layer": 1, "dim": 32, "n_head": 2}


def _cfg(run: Path, **kw) -> TrainConfig:
    base = dict(exp="gpt2ish", run_dir=str(run), batch_size=2, seq_len=16, max_steps=2, eval_every=0, save_every=2,
                model_args=dict(TINY), optimizer="adamw", lr=3e-3, progress=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("values") / "run"
    train(_cfg(run))
    return run


def test_threads_capped_with_a_warning(monkeypatch, capsys):
    import os

    from lminspect.runtime import MAX_THREADS_PER_CPU, resolve_threads

    cap = MAX_THREADS_PER_CPU * (os.cpu_count() or 1)
    assert resolve_threads(1_000_000_000) == cap
    assert "--threads 1000000000 is more than" in capsys.readouterr().err
    monkeypatch.setenv("LMINSPECT_THREADS", "1000000000")
    assert resolve_threads(None) == cap
    assert "$LMINSPECT_THREADS=1000000000" in capsys.readouterr().err
    assert resolve_threads(2) == 2 and capsys.readouterr().err == ""


def test_broken_side_files_are_warned(tmp_path, tiny_llama_dir):
    d = tmp_path / "m"
    shutil.copytree(tiny_llama_dir, d)
    (d / "generation_config.json").write_text("{bad")
    (d / "tokenizer_config.json").write_text("[1]")
    r = CliRunner().invoke(app, ["generate", str(d), "hi", "-n", "1"])
    assert r.exit_code == 0, r.output
    warns = [ln for ln in r.output.splitlines() if ln.startswith("lminspect: warning:")]
    assert any("generation_config.json: ignored" in w for w in warns)
    assert any("tokenizer_config.json: ignored" in w for w in warns)


def test_nan_block_scales_are_warned(tmp_path, tiny_llama_dir, capsys):
    from test_weights_gguf import write_llama_gguf

    from lminspect.weights.gguf_format import GGUFFile

    path = write_llama_gguf(tiny_llama_dir, tmp_path / "q8.gguf")
    g = GGUFFile(path)
    name = "blk.0.ffn_up.weight"
    _, _, start, nbytes, _ = g.tensors[name]
    data = bytearray(path.read_bytes())
    for off in range(start, start + nbytes, 34):  # Q8_0 blocks: an f16 scale, then 32 int8
        data[off:off + 2] = np.array([np.nan], "<f2").tobytes()
    path.write_bytes(bytes(data))
    with _no_numpy_warnings():
        a = GGUFFile(path).get(name)
    assert np.isnan(a).all()
    err = capsys.readouterr().err
    assert "NaN/inf values" in err and name in err


class _no_numpy_warnings:  # noqa: N801 - a context manager read as a phrase
    def __enter__(self) -> None:
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)


def test_init_from_another_family_is_refused(gpt2_run, tmp_path):
    r = CliRunner().invoke(app, ["train", "--exp", "llamaish", "--init-from", str(gpt2_run), "--run-dir",
                                 str(tmp_path / "r"), "--max-steps", "1"])
    assert r.exit_code == 2, r.output
    assert "a gpt2 model, but the experiment trains a llama model" in r.output
    assert not (tmp_path / "r").exists()


def test_run_at_nothing_is_one_line(gpt2_run):
    from lminspect.compare.checkpoints import resolve_ref

    with pytest.raises(UserError, match="step number"):
        resolve_ref(f"{gpt2_run}@")


def test_garbage_checkpoint_config_is_not_resumed(tmp_path):
    run = tmp_path / "run"
    train(_cfg(run, max_steps=4, keep_checkpoints=3))
    (run / "checkpoints" / "step_0000004" / "config.json").write_text("garbage{")
    from lminspect.train.checkpoint import latest_checkpoint

    assert latest_checkpoint(run).name == "step_0000002"  # the damaged newest is skipped
    (run / "checkpoints" / "step_0000002" / "config.json").write_text("[]")
    r = CliRunner().invoke(app, ["train", "--run-dir", str(run), "--resume", "--max-steps", "5"])
    assert r.exit_code == 2 and "no complete checkpoint" in r.output, r.output


def test_resume_with_only_config_says_it_restarts(tmp_path, capsys):
    run = tmp_path / "run"
    train(_cfg(run))
    shutil.rmtree(run / "checkpoints")
    (run / "stats.jsonl").unlink()
    res = train(_cfg(run, resume=True, max_steps=1))
    assert res.step == 1
    assert "has no checkpoint yet; training starts again from step 0" in capsys.readouterr().err


def test_convert_of_an_unloadable_gguf_is_refused(tmp_path, tiny_llama_dir):
    from test_weights_gguf import write_llama_gguf

    src = tmp_path / "src"
    shutil.copytree(tiny_llama_dir, src)
    c = json.loads((src / "config.json").read_text())
    c["num_hidden_layers"] += 1  # the GGUF says one block more than it holds
    (src / "config.json").write_text(json.dumps(c))
    g = write_llama_gguf(src, tmp_path / "short.gguf")
    r = CliRunner().invoke(app, ["convert", str(g), str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    assert "could not be loaded" in r.output and f"layers.{c['num_hidden_layers'] - 1}." in r.output
    assert not (tmp_path / "out").exists()


def test_saturation_with_a_row_without_step(gpt2_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(gpt2_run, run)
    with open(run / "stats.jsonl", "a") as f:
        f.write('{"step": "x", "loss": [1]}\n')
    r = CliRunner().invoke(app, ["plot", str(run), "--saturation"])
    assert r.exit_code == 0, (r.output, r.exception)
