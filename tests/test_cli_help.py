"""Help texts: every command explains itself with an example line, in users' words, without
stray line breaks; one grammar (MODEL first, --plan) for the stitch commands."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lminspect.cli import app
from lminspect.cli.helptext import reflow

runner = CliRunner()


def _commands(typer_app, prefix=()):
    for c in typer_app.registered_commands:
        yield (*prefix, c.name or c.callback.__name__.replace("_", "-")), c
    for g in typer_app.registered_groups:
        yield from _commands(g.typer_instance, (*prefix, g.name))


def test_every_command_has_an_example_and_no_seed_jargon():
    missing = [" ".join(path) for path, c in _commands(app) if "Example:" not in (c.help or "")]
    assert not missing, f"add an 'Example: lminspect ...' paragraph to the docstring of: {missing}"
    jargon = [" ".join(path) for path, c in _commands(app) if "seed 00" in (c.help or "")]
    assert not jargon, jargon


@pytest.mark.parametrize("args", [["stats", "--help"], ["stitch", "export", "--help"], ["plot", "--help"]])
def test_help_paragraphs_are_not_broken_mid_sentence(args):
    r = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert r.exit_code == 0
    desc = [ln.strip() for ln in r.output.splitlines()[3:] if ln.strip() and not ln.lstrip().startswith(("╭", "│", "╰"))]
    first = desc[0]
    assert first.endswith((".", ")")), first  # the first paragraph is one line at 200 columns
    assert any(ln.startswith("Example: lminspect") for ln in desc)


def test_reflow_keeps_examples_and_joins_paragraphs():
    text = "Does a thing\n    over two lines.\n\n    More words\n    here.\n\n    Example: lminspect x\n    "
    assert reflow(text) == "Does a thing over two lines.\n\nMore words here.\n\nExample: lminspect x"


def test_stitch_show_and_presets_take_the_model_first(tiny_llama_dir):
    r = runner.invoke(app, ["stitch", "show", str(tiny_llama_dir), "--plan", "0,1r2,3"])
    assert r.exit_code == 0, r.output
    assert "on 4 layers" in r.output and "0 1 1 3" in r.output and "skipped: 2" in r.output
    r = runner.invoke(app, ["stitch", "presets", str(tiny_llama_dir)], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    assert "plan on 4 layers" in r.output and max(len(ln) for ln in r.output.splitlines()) <= 80
    r = runner.invoke(app, ["stitch", "show", "--plan", "15r3", "--layers", "30"])
    assert r.exit_code == 0 and "15 15 15" in r.output
    r = runner.invoke(app, ["stitch", "show", str(tiny_llama_dir)])
    assert r.exit_code == 2 and "--plan" in r.stderr and r.stderr.count("\n") == 1


def test_misspelt_preset_suggests_the_nearest():
    r = runner.invoke(app, ["stitch", "show", "--plan", "skip_near_end_keep_last"])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "did you mean 'skip_near_end_keep_last_two'?" in r.stderr
    r = runner.invoke(app, ["stitch", "show", "--plan", "0-3,x7"])  # a layer spec: no preset guess
    assert r.exit_code == 2 and "did you mean" not in r.stderr and "column 5" in r.stderr
