"""UserError is a plain exception (no click in the library); the CLI alone turns it into one line + exit 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lminspect.cli import app
from lminspect.errors import FormatError, UserError


def test_user_error_is_plain_and_carries_where():
    e = UserError("bad   thing\n here", "try X", column=5, option="--plan")
    assert type(e).__mro__[1] is Exception and not any("click" in c.__module__ for c in type(e).__mro__)
    assert e.message == str(e) == "bad thing here" and e.hint == "try X"
    assert (e.column, e.option) == (5, "--plan")
    assert e.one_line() == "lminspect: error: bad thing here (hint: try X)"
    assert issubclass(FormatError, UserError)


def test_plan_errors_carry_their_column():
    from lminspect.stitch import parse_plan

    with pytest.raises(UserError) as info:
        parse_plan("0-1,9", 4)
    assert info.value.column == 5 and "column 5" in info.value.message
    with pytest.raises(UserError) as info:
        parse_plan("0,1,x", 4)
    assert info.value.column == 5


def test_cli_prints_one_line_and_exits_2(tiny_llama_dir):
    r = CliRunner().invoke(app, ["stitch", "show", str(tiny_llama_dir), "--plan", "0-1,9"])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lminspect: error:") and "column 5" in lines[0]


def test_option_checks_say_which_option():
    from lminspect import validate

    with pytest.raises(UserError) as info:
        validate.count("--limit", 0)
    assert info.value.option == "--limit" and info.value.message.startswith("--limit 0")
