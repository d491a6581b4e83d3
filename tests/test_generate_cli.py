"""``lminspect generate`` on a tiny HF dir through typer's CliRunner."""

from __future__ import annotations

from typer.testing import CliRunner

from lminspect.cli import app


def test_generate_cli_greedy(tiny_llama_dir):
    r = CliRunner().invoke(app, ["generate", str(tiny_llama_dir), "Once upon a time", "-n", "5", "--plan", "all"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("Once upon a time")
    assert "tok/s" in r.stderr


def test_generate_cli_plan_and_sampling(tiny_llama_dir):
    r = CliRunner().invoke(app, ["generate", str(tiny_llama_dir), "The model", "-n", "4", "--plan", "0,1,1,3",
                                 "--temperature", "0.7", "--top-k", "20", "--seed", "3", "--stop", "zzz"])
    assert r.exit_code == 0, r.output
