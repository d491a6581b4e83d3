"""Headless paths must not import textual (nor torch): ``lminspect --help`` stays fast."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, timeout=120,
    )
    return set(out.stdout.split())


def test_import_lminspect_and_cli_pulls_in_neither_textual_nor_torch():
    mods = _modules_after("import lminspect, lminspect.cli")
    assert "textual" not in mods
    assert "torch" not in mods
    assert "lminspect.tui.app" not in mods


def test_help_does_not_import_textual():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from lminspect.cli import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(app, ['tui', '--help'])\n"
        "assert r.exit_code == 0 and 'MODEL' in r.output.upper(), r.output\n"
    )
    mods = _modules_after(code)
    assert "textual" not in mods
    assert "torch" not in mods
