"""Usage errors (unknown command or option, bad or missing value) end like every other bad
input: exit code 2 and one line naming the command, no usage box."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lminspect.cli import app


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["bogus"], "No such command 'bogus'"),
        (["generate", "x", "--bogus"], "lminspect generate: No such option: --bogus"),
        (["stats"], "lminspect stats: Missing argument"),
        (["train", "--batch-size", "many"], "lminspect train: Invalid value for '--batch-size'"),
        (["stitch", "run", "x", "--max-new-tokens"], "requires an argument"),
    ],
)
def test_usage_error_is_one_line(args, says):
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lminspect: error: "), r.output
    assert says in lines[0] and "-h'" in lines[0]


def test_bare_group_still_shows_help():
    r = CliRunner().invoke(app, ["stitch"])
    assert "Usage" in r.output and "sweep" in r.output
