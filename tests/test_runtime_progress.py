"""Every long command: plain progress lines when redirected, the thread count in its summary line,
and Ctrl-C ending with exit 130 and one line saying what was saved (nothing half-written)."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lminspect.cli import app
from lminspect.runtime import Progress

runner = CliRunner()


@pytest.fixture
def plain_progress(monkeypatch):
    """A plain progress line at every update (CliRunner's stderr is not a terminal), one thread."""
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("LMINSPECT_PROGRESS_EVERY", "0")
    monkeypatch.setenv("LMINSPECT_THREADS", "1")
    yield
    torch.set_num_threads(before)


def test_progress_lines_unknown_total_info_and_quiet_quick_jobs():
    buf = io.StringIO()
    p = Progress("metadata", None, "documents", stream=buf, every=0)
    p.update(3, info="doc 3")
    assert buf.getvalue().splitlines() == [p.line()]
    assert p.line().startswith("metadata: 3 documents, ") and "ETA" not in p.line() and p.line().endswith("(doc 3)")
    quiet = io.StringIO()
    q = Progress("stats", 2, "tensors", stream=quiet, every=3600)
    q.update(1)
    q.update(2)
    assert quiet.getvalue() == ""  # done within `every` seconds: no line at all
    resumed = Progress("train", 10, "steps", stream=io.StringIO(), every=0, start=8)
    assert "ETA ?" in resumed.line()  # no step of this run yet: no rate to guess from
    resumed.update(9)
    assert "9/10 steps" in resumed.line() and "ETA ?" not in resumed.line()


def _lines(r, prefix: str) -> list[str]:
    return [ln for ln in r.stderr.splitlines() if ln.startswith(prefix)]


def test_stats_diff_patch_metadata_show_progress_and_threads(tiny_llama_dir, scaled_copy, plain_progress, tmp_path):
    r = runner.invoke(app, ["stats", str(tiny_llama_dir), "--no-svd", "--json"])
    assert r.exit_code == 0, r.output
    lines = _lines(r, "stats: ")
    n = len(r.stdout.splitlines())
    assert lines[0].startswith(f"stats: 0/{n} tensors") and lines[-1].startswith(f"stats: {n}/{n} tensors, ")
    assert "ETA" in lines[-1] and r.stderr.splitlines()[-1].startswith(f"stats of {n} tensors in ")
    assert r.stderr.splitlines()[-1].endswith(", 1 thread")

    r = runner.invoke(app, ["diff", str(tiny_llama_dir), str(scaled_copy), "--no-svd"])
    assert r.exit_code == 0, r.output
    assert _lines(r, "diff: ")[-1].startswith("diff: ") and "tensor pairs" in _lines(r, "diff: ")[-1]
    assert r.stderr.splitlines()[-1].startswith("diff of ") and r.stderr.splitlines()[-1].endswith("1 thread")

    r = runner.invoke(app, ["patch", str(tiny_llama_dir), "--clean", "Once upon a time there is", "--corrupt",
                            "Once upon a day there was", "--metric",
                            "logit: id:5", "--site", "head", "--batch-size", "1"])
    assert r.exit_code == 0, r.output
    done = _lines(r, "patch: ")
    assert len(done) >= 2 and "patched runs" in done[-1]
    assert r.stderr.splitlines()[-1].startswith("patching: ") and r.stderr.splitlines()[-1].endswith("1 thread")

    r = runner.invoke(app, ["data", "metadata", "builtin", "--limit", "3", "--out", str(tmp_path / "m.parquet")])
    assert r.exit_code == 0, r.output
    assert [ln.split(",")[0] for ln in _lines(r, "metadata: ")] == [f"metadata: {k}/3 documents" for k in (1, 2, 3)]
    assert "1 thread" in r.stdout


def test_train_shows_plain_progress_and_threads(tmp_path, plain_progress):
    args = ["train", "--run-dir", str(tmp_path / "run"), "--max-steps", "3", "--set", "n_layer=1", "--set", "dim=32",
            "--set", "n_head=2", "--seq-len", "16", "--batch-size", "2", "--eval-every", "0"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    lines = _lines(r, "train ")
    assert [ln.split(",")[0] for ln in lines] == [f"train gpt2ish: {k}/3 steps" for k in (1, 2, 3)]
    assert "loss " in lines[-1] and "tok/s" in lines[-1]
    assert r.stdout.strip().splitlines()[-1].endswith("; 1 thread")


def test_ctrl_c_fallback_says_nothing_written(tiny_llama_dir, tmp_path, monkeypatch):
    """A command without partial results: exit 130, one line, and no output (nor its temp) left."""
    import safetensors.torch

    def half_then_ctrl_c(tensors, path, metadata=None):
        Path(path).write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_ctrl_c)
    out = tmp_path / "short"
    r = runner.invoke(app, ["stitch", "export", str(tiny_llama_dir), str(out), "--plan", "0-2"])
    assert r.exit_code == 130, r.output
    assert r.stderr.strip().splitlines() == ["lminspect: interrupted; nothing written"]
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_in_train_setup_names_what_is_on_disk(tmp_path, monkeypatch):
    """Ctrl-C before the first step: the line says what the run dir holds, and how to go on."""
    import lminspect.train.runner as runner_mod

    def setup_then_ctrl_c(cfg, on_step=None):
        Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
        (Path(cfg.run_dir) / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(runner_mod, "train_loop", setup_then_ctrl_c)  # the loop the CLI's runner calls
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "--exp", "gpt2ish", "--run-dir", str(run), "--max-steps", "2"])
    assert r.exit_code == 130, r.output
    assert r.stderr.strip().splitlines() == [
        f"lminspect: interrupted; before the first step; {run} holds its config.json, no checkpoint; "
        f"continue with: lminspect train --run-dir {run} --resume"]


def test_ctrl_c_in_generate_says_how_far_it_got(tiny_llama_dir, monkeypatch):
    from lminspect.generate import Generation

    real = Generation._run

    def ctrl_c_after_3_tokens(self):
        for piece in real(self):
            if self.stats.new_tokens >= 3:
                raise KeyboardInterrupt
            yield piece

    monkeypatch.setattr(Generation, "_run", ctrl_c_after_3_tokens)
    r = runner.invoke(app, ["generate", str(tiny_llama_dir), "hello", "-n", "32", "--threads", "1"])
    assert r.exit_code == 130, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and re.fullmatch(r"lminspect: interrupted; after \d+/32 new tokens \(1 thread\); "
                                            r"nothing written", lines[0]), lines
    assert 3 <= int(lines[0].split("after ")[1].split("/")[0]) < 32


def test_ctrl_c_in_activations_names_the_snapshot(tiny_llama_dir, tmp_path, monkeypatch):
    out = tmp_path / "acts"
    base = ["activations", str(tiny_llama_dir), "--out", str(out), "--tokens", "64", "--seq-len", "16",
            "--batch-size", "1", "--save-every", "0", "--threads", "1"]
    r = runner.invoke(app, [*base, "--max-batches", "1"])  # a partial, resumable collection
    assert r.exit_code == 0, r.output
    assert "1 thread: partial" in r.stderr
    import lminspect.activations as acts

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(acts, "collect", interrupt)
    r = runner.invoke(app, base)
    assert r.exit_code == 130, r.output
    assert r.stderr.strip().splitlines() == [f"lminspect: interrupted; snapshot of 16 tokens saved in {out}; run the "
                                             "same command again to resume"]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    t0 = time.monotonic()
    while not (path.is_file() and path.stat().st_size > 0):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.2)


def test_sigint_stops_training_with_one_line_and_a_checkpoint(tmp_path):
    """A real Ctrl-C (SIGINT) to `lminspect train` with stderr redirected: exit 130, one line, the checkpoint."""
    run = tmp_path / "run"
    env = {**os.environ, "LMINSPECT_THREADS": "1", "LMINSPECT_PROGRESS_EVERY": "3600"}
    args = [sys.executable, "-m", "lminspect", "train", "--run-dir", str(run), "--max-steps", "100000", "--set",
            "n_layer=1", "--set", "dim=32", "--set", "n_head=2", "--seq-len", "16", "--batch-size", "2",
            "--eval-every", "0", "--save-every", "0"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(run / "stats.jsonl", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("lminspect: interrupted; at step ") and f"saved in {run}; continue with:" in lines[0]
    step = int(lines[0].split("at step ")[1].split(";")[0])
    assert (run / "checkpoints" / f"step_{step:07d}").is_dir()
    assert not [p for p in run.rglob(".*.tmp")]  # no half-written checkpoint
