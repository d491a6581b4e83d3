"""The flag grammar of docs/cli.md ("Flag grammar") against the commands themselves: every
documented flag is in exactly the commands listed (and in their --help), each short flag means one
thing across commands, old spellings are hidden and still work with a one-line note."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from lminspect.cli import app

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
TESTING_ONLY = {"--max-batches"}  # hidden options that are not old spellings
runner = CliRunner()


def _commands(cmd=None, path=()):
    cmd = cmd or typer.main.get_command(app)
    subs = getattr(cmd, "commands", None)
    if subs:
        for name, sub in subs.items():
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), cmd


COMMANDS = dict(_commands())


def _options(cmd, hidden: bool = False):
    return [p for p in cmd.params if p.param_type_name == "option" and bool(p.hidden) == hidden]


def _table(title: str) -> list[tuple[list[str], list[str]]]:
    """(flags, commands) of each row of the table under the heading ``title``."""
    text = DOC.read_text(encoding="utf-8").split(f"## {title}\n", 1)[1]
    rows = []
    for line in text.splitlines():
        if line.startswith("## ") or line.startswith("# "):
            break
        if not line.startswith("| `"):
            continue
        cells = line.strip("|").split(" | ")
        flags = re.findall(r"`(-[^`]*)`", cells[0])
        rows.append((flags, re.findall(r"`([^`]+)`", cells[-1])))
    assert rows, f"no rows under '## {title}' in {DOC}"
    return rows


SHARED = _table("Shared flags")
OLD = _table("Old spellings")


def _has(cmd, flag: str, hidden: bool = False):
    return next((p for p in _options(cmd, hidden) if flag in p.opts + p.secondary_opts), None)


@pytest.mark.parametrize(("flags", "listed"), SHARED, ids=[f[0] for f, _ in SHARED])
def test_each_shared_flag_is_in_exactly_the_commands_listed(flags, listed):
    assert set(listed) <= set(COMMANDS), set(listed) - set(COMMANDS)
    main = flags[0]
    have = {name for name, cmd in COMMANDS.items() if _has(cmd, main)}
    assert have == set(listed), f"{main}: in {sorted(have - set(listed))} but not listed; listed but absent: " \
                                f"{sorted(set(listed) - have)}"
    for name in listed:
        p = _has(COMMANDS[name], main)
        for f in flags[1:]:
            assert f in p.opts + p.secondary_opts, f"{name}: {main} has no {f}"


def test_one_meaning_per_short_flag_and_every_shared_flag_documented():
    documented = {f[0]: f for f, _ in SHARED}
    meaning: dict[str, set[str]] = {}
    uses: dict[str, set[str]] = {}
    for name, cmd in COMMANDS.items():
        for p in _options(cmd):
            longs = [o for o in p.opts if o.startswith("--")]
            if not longs:
                continue
            uses.setdefault(longs[0], set()).add(name)
            for s in (o for o in p.opts if not o.startswith("--")):
                meaning.setdefault(s, set()).add(longs[0])
    clashes = {s: m for s, m in meaning.items() if len(m) > 1 and s != "-h"}
    assert not clashes, f"short flags with several meanings: {clashes}"
    for s, (long_,) in ((s, m) for s, m in meaning.items() if s != "-h"):
        assert long_ in documented and s in documented[long_], f"{s} ({long_}) is not in the table"
    shared = {f for f, names in uses.items() if len(names) > 1 and f != "--help"}
    assert shared <= set(documented), f"flags in several commands, not in docs/cli.md: {shared - set(documented)}"


@pytest.mark.parametrize(("flags", "listed"), OLD, ids=[f[0] for f, _ in OLD])
def test_old_spellings_are_hidden_options(flags, listed):
    for name in listed:
        for f in flags:
            assert _has(COMMANDS[name], f, hidden=True), f"{name}: no hidden {f}"


def test_every_hidden_option_is_a_documented_old_spelling():
    old = {(f, name) for flags, listed in OLD for f in flags for name in listed}
    for name, cmd in COMMANDS.items():
        for p in _options(cmd, hidden=True):
            for f in p.opts:
                assert f in TESTING_ONLY or (f, name) in old, f"{name}: hidden {f} is not in the old spellings table"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_shows_the_grammar(name):
    r = runner.invoke(app, [*name.split(), "--help"], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    for flags, listed in SHARED:
        if name in listed:
            assert re.search(rf"(?<![\w-]){re.escape(flags[0])}\b", r.output), f"{name} --help lacks {flags[0]}"
    for flags, listed in OLD:
        if name in listed:
            for f in (f for f in flags if f.startswith("--")):
                assert not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", r.output), f"{name} --help shows {f}"
    out = _has(COMMANDS[name], "--out")
    if out is not None:
        assert re.search(r"\b(file|folder)\b", out.help or "", re.I), f"{name} --out: say file or folder"


def test_prompt_is_positional_and_the_old_flag_still_works(tiny_llama_dir):
    d = str(tiny_llama_dir)
    new = runner.invoke(app, ["lens", d, "Once upon", "--target", "id:5", "--plot", "none"])
    assert new.exit_code == 0, new.output
    assert "deprecated" not in new.stderr
    old = runner.invoke(app, ["lens", d, "--prompt", "Once upon", "--target", "id:5", "--plot", "none"])
    assert old.exit_code == 0, old.output
    notes = [ln for ln in old.stderr.splitlines() if "deprecated" in ln]
    assert notes == ['lminspect: note: --prompt is deprecated; use the PROMPT argument (lminspect lens MODEL "TEXT")']
    assert old.stdout == new.stdout
    r = runner.invoke(app, ["lens", d])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "give the prompt after the model" in r.stderr
    r = runner.invoke(app, ["lens", d, "a", "--prompt", "b"])
    assert r.exit_code == 2 and "give it once" in r.stderr


def test_renamed_flags_agree_with_their_old_spelling(tiny_llama_dir, tmp_path):
    d = str(tiny_llama_dir)
    a = runner.invoke(app, ["stitch", "run", d, "Once", "-n", "3", "--temperature", "0"])
    b = runner.invoke(app, ["stitch", "run", d, "--prompt", "Once", "--max-tokens", "3", "-t", "0"])
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    assert a.stdout == b.stdout and b.stderr.count("deprecated") == 3
    r = runner.invoke(app, ["stitch", "export", d, "--out", str(tmp_path / "x"), "--plan", "0,1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["stitch", "export", d, str(tmp_path / "y"), "--out", str(tmp_path / "z"), "-p", "0"])
    assert r.exit_code == 2 and "two outputs" in r.stderr


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_keeps_bracketed_words(name):
    """Rich markup would read '[figures]' or '[pos, head, T, T]' as a style tag and drop it."""
    r = runner.invoke(app, [*name.split(), "--help"], env={"COLUMNS": "250"})
    shown = " ".join(r.output.replace("│", " ").split())
    for p in COMMANDS[name].params:
        for word in re.findall(r"\\?\[[a-z#/@][^\[\]]*\]", getattr(p, "help", None) or ""):
            word = word.removeprefix("\\")
            assert word in shown, f"{name} {p.name}: {word} is missing from --help (escape it as \\{word})"
