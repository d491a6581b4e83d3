"""--threads / LMINSPECT_THREADS on every compute command, and the thread count in summary lines."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lminspect.cli import app
from lminspect.errors import UserError
from lminspect.runtime import default_threads, resolve_threads, set_threads

runner = CliRunner()

COMPUTE = [["generate"], ["stitch", "run"], ["stitch", "sweep"], ["attention"], ["stats"], ["activations"],
           ["activations-diff"], ["train"], ["data", "metadata"], ["tui"], ["grow"], ["lens"], ["dla"], ["patch"],
           ["diff"], ["timeline"], ["convert"], ["stitch", "export"], ["session", "run"]]


@pytest.mark.parametrize("cmd", COMPUTE, ids=" ".join)
def test_every_compute_command_has_threads(cmd):
    r = runner.invoke(app, [*cmd, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "--threads" in r.output and "LMINSPECT_THREADS" in r.output.replace("\n", " ")


def test_thread_count_rule(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.delenv("LMINSPECT_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert resolve_threads() == 2
    monkeypatch.setenv("LMINSPECT_THREADS", "1")
    assert resolve_threads() == 1  # ours wins over OMP_NUM_THREADS
    try:
        assert set_threads(3) == 3 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    monkeypatch.setenv("LMINSPECT_THREADS", "many")
    with pytest.raises(UserError, match="LMINSPECT_THREADS"):
        resolve_threads()
    assert 1 <= default_threads()


def test_generate_summary_names_threads(tiny_llama_dir, monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("LMINSPECT_THREADS", "1")
    try:
        r = runner.invoke(app, ["generate", str(tiny_llama_dir), "hello", "-n", "3"])
    finally:
        torch.set_num_threads(before)
    assert r.exit_code == 0, r.output
    assert "1 thread" in r.output and "1 threads" not in r.output
