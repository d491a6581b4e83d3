"""Small frictions of issue 29: the README's session line from any folder, did-you-mean for a
misspelt session or fetched model name."""

from __future__ import annotations

import pytest

from lminspect.errors import UserError
from lminspect.sessions_runner import resolve


def test_readme_session_path_works_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no sessions/ here: the shipped script is found
    assert resolve("sessions/frankenllama.py").name == "frankenllama.py"
    assert resolve("frankenllama").name == "frankenllama.py"
    with pytest.raises(UserError, match="did you mean 'frankenllama'"):
        resolve("frankenlama")


def test_misspelt_fetched_name_suggests_the_known_one(tmp_path, monkeypatch):
    from lminspect.weights import open_store

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="did you mean 'smollm2'"):
        open_store("smolm2")
    with pytest.raises(UserError) as e:
        open_store("zzzz")
    assert "did you mean" not in e.value.message


# --- a plan typo is reported before torch and the model load -------------------------------

PLAN_TYPOS = [
    ("stitch", "run", "{m}", "hi", "--plan", "0-3,zz"),
    ("stitch", "export", "{m}", "--out", "{tmp}/x", "--plan", "0-3,zz"),
    ("stitch", "sweep", "{m}", "--eval", "cloze", "--plan", "cut=0-3,zz"),
    ("lens", "{m}", "hi", "--compare", "0-3,zz"),
    ("dla", "{m}", "hi", "--target", "x", "--plan", "0-3,zz"),
    ("eval", "{m}", "--plan", "0-3,zz"),
    ("generate", "{m}", "hi", "--plan", "0-3,zz"),
    ("attention", "{m}", "hi", "--plan", "0-3,zz"),
]


@pytest.mark.parametrize("args", PLAN_TYPOS, ids=lambda a: " ".join(a[:2]))
def test_plan_typo_is_reported_without_torch(args, tiny_llama_dir, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    argv = [a.format(m=tiny_llama_dir, tmp=tmp_path) for a in args]
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "lminspect", *argv], capture_output=True,
                       text=True, cwd=tmp_path, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=300)
    errors = [ln for ln in r.stderr.splitlines() if not ln.startswith("import time:")]
    assert r.returncode == 2 and len(errors) == 1 and "bad plan item 'zz'" in errors[0], r.stderr[-2000:]
    imported = {ln.rsplit("|", 1)[-1].strip() for ln in r.stderr.splitlines() if ln.startswith("import time:")}
    assert "torch" not in imported and "numpy" not in imported


def test_plan_parsing_needs_no_torch():
    import subprocess
    import sys

    code = ("import sys, lminspect.stitch.plans as p, lminspect.stitch as s, lminspect.models as m; "
            "p.check_plan_early('0-3,5r2'); assert s.parse_plan is p.parse_plan; "
            "print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr
    import lminspect.models as models

    assert sorted(models.FAMILIES)[:2] == ["falcon", "gemma"] and models.LM.__name__ == "LM"


# --- presets: the description in the numbering of the plan beside it -------------------------

def test_preset_descriptions_follow_the_rescaled_plan():
    from typer.testing import CliRunner

    from lminspect.cli import app
    from lminspect.stitch.presets import PRESETS, preset_description

    assert all(preset_description(name, 32) == desc for name, (_, desc) in PRESETS.items())
    assert preset_description("0-23_27-31", 30) == "skips layers 23-24"
    assert preset_description("15r3_23r3_31r3", 30) == "only layers 14, 22, 29, each three times"
    r = CliRunner().invoke(app, ["stitch", "presets", "--layers", "30"], env={"COLUMNS": "200"})
    row = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith("0-23_27-31"))
    assert "0-22,25-29" in row and "skips layers 23-24" in row and "32-layer" not in r.stdout.split("Presets")[0]
    from lminspect.tui.backend import stitch_presets

    assert stitch_presets(30)["0-23_27-31"] == "skips layers 23-24"  # the TUI palette says the same
    assert stitch_presets(None) == {name: desc for name, (_, desc) in PRESETS.items()}


# --- stats prints a histogram ---------------------------------------------------------------

def test_stats_prints_a_text_histogram(tiny_llama_dir):
    from typer.testing import CliRunner

    from lminspect.cli import app

    run = CliRunner()
    one = run.invoke(app, ["stats", str(tiny_llama_dir), "-t", "layers.1.mlp.down", "--no-svd"])
    assert one.exit_code == 0, one.output
    bars = [ln for ln in one.stdout.splitlines() if " .. " in ln and "█" in ln]
    assert 8 <= len(bars) <= 16 and "layers.1.mlp.down.weight: 8,192 values" in one.stdout
    assert sum(int(ln.rsplit(" ", 1)[1].replace(",", "")) for ln in one.stdout.splitlines() if " .. " in ln) == 8192
    off = run.invoke(app, ["stats", str(tiny_llama_dir), "-t", "layers.1.mlp.down", "--no-svd", "--no-hist"])
    assert " .. " not in off.stdout
    two = run.invoke(app, ["stats", str(tiny_llama_dir), "-t", "layers.1.mlp.*", "--no-svd"])
    assert " .. " not in two.stdout  # many tensors: the table alone, unless --hist
    many = run.invoke(app, ["stats", str(tiny_llama_dir), "-t", "layers.1.mlp.*", "--no-svd", "--hist"])
    assert many.stdout.count(" values\n") == 3


# --- bracketed words survive Textual's markup in the save dialog ---------------------------

@pytest.mark.anyio
async def test_save_dialog_keeps_the_figures_extra():
    from textual.app import App
    from textual.widgets import Label

    from lminspect.tui.screens.save_figure import SaveFigureScreen

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(SaveFigureScreen("x.png"))

    app = Host()
    async with app.run_test() as pilot:
        await pilot.pause()
        texts = [str(label.render()) for label in app.screen.query(Label)]
    assert any("needs the [figures] extra" in t for t in texts), texts
