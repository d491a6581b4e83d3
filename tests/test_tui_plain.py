"""The TUI read without colour and with clear focus (issue 29, section 4): tick marks that differ
by glyph, a marker per plot line, focus that never leaves typed letters to the app's keys, the
prompt's cursor at the end, and no stray scrollbar blocks."""

from __future__ import annotations

import re

import pytest
from test_tui_helpers import opened, press_until, screen_text, wait_until, write_run
from textual.widgets import Input, SelectionList, TextArea

from lminspect.tui.app import LMInspectApp
from lminspect.tui.screens.picker import PickerScreen
from lminspect.tui.widgets.plot import PlotView

SIZE = (120, 40)
BRAILLE = "".join(chr(c) for c in range(0x2800, 0x2900))
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("private_cache")]


def _row(text: str, name: str) -> str:
    """The Runs list's row of run ``name`` ('' while it is not drawn yet)."""
    return next((line for line in text.splitlines() if f"{name} · gpt2ish" in line), "")


async def test_ticks_and_legends_read_without_colour(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")  # a monochrome terminal: only glyphs tell things apart
    runs = tmp_path / "runs"
    write_run(runs / "base", steps=20)
    write_run(runs / "vn", steps=20, offset=0.3)
    app = LMInspectApp(None, runs_dir=runs, remember=False)
    async with app.run_test(size=SIZE) as pilot:
        assert app.no_color
        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen), what="the picker")
        await press_until(pilot, "escape", until=lambda: not isinstance(app.screen, PickerScreen), what="no picker")
        sl = app.query_one("#runs-list", SelectionList)
        await press_until(pilot, "r", until=lambda: app.focused is sl and sl.option_count == 2, what="the runs list")
        await wait_until(pilot, lambda: "▐ ▌ base" in _row(screen_text(app), "base")
                         and "▐ ▌ vn" in _row(screen_text(app), "vn"), what="both rows, unticked",
                         detail=lambda: screen_text(app))
        await press_until(pilot, "space", until=lambda: len(sl.selected) == 1, what="base ticked")
        await wait_until(pilot, lambda: "▐X▌ base" in _row(screen_text(app), "base"), what="base's tick drawn")
        assert "▐ ▌ vn" in _row(screen_text(app), "vn")
        await press_until(pilot, "down", "space", until=lambda: len(sl.selected) == 2, what="vn ticked")
        plot = app.query_one("#plot-loss", PlotView)
        await wait_until(pilot, lambda: "vn" in plot.text and "base" in plot.text, what="both runs' loss lines")
        # each line its own marker, and the legend says which: "oo base", "xx vn"
        marks = {name: mark for mark, name in re.findall(r"(\S)\1 (base|vn)\b", plot.text)}
        assert set(marks) == {"base", "vn"} and marks["base"] != marks["vn"], plot.text
        assert not {marks["base"], marks["vn"]} & set(BRAILLE), marks
        assert plot.text.count(marks["vn"]) > 5  # the line itself is drawn with its marker


async def test_after_run_letters_type_into_the_prompt_not_the_app(tiny_llama_dir, tmp_path):
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        plan = app.query_one("#plan-input", Input)
        await press_until(pilot, "s", until=lambda: app.focused is plan, what="the plan field")
        prompt = app.query_one("#prompt", TextArea)
        # Tab into the prompt: the cursor at the end, so typing extends the old prompt
        for _ in range(6):
            if app.focused is prompt:
                break
            await pilot.press("tab")
            await pilot.pause()
        await wait_until(pilot, lambda: app.focused is prompt, what="tab to reach the prompt")
        await press_until(pilot, *" there", until=lambda: prompt.text.endswith(" there"),
                          what="typed text after the old prompt", detail=lambda: prompt.text)
        assert prompt.text == "Once upon a time there"
        app.query_one("#max-tokens", Input).value = "4"
        run = app.query_one("#run")
        run.focus()
        await wait_until(pilot, lambda: app.focused is run, what="the Run button focused")
        await pilot.press("enter")
        await wait_until(pilot, lambda: not run.disabled and "done" in str(app.query_one("#gen-status").render()),
                         what="the generation to end")
        await pilot.press("c")  # the app's compare key: must type, not open the picker
        await pilot.pause()
        assert not isinstance(app.screen, PickerScreen)
        assert app.focused is prompt
        await wait_until(pilot, lambda: prompt.text == "Once upon a time therec", what="'c' typed into the prompt",
                         detail=lambda: prompt.text)


# a vertical scrollbar's thumb ends: exactly two equal partial blocks (a tall border's ▁ run is longer;
# figures draw with █ ▄ ▀, never these pairs)
THUMB = re.compile(r"(?<![▁▂▃▅▆▇])([▁▂▃▅▆▇])\1(?![▁▂▃▅▆▇])")


def _stray_scrollbars(app) -> list[str]:
    """Scrollbar thumbs anywhere but the pane's right edge (a table scrolling inside a scrolled view)."""
    width = app.size.width
    return [f"row {y} col {m.start()}: {line[max(0, m.start() - 30):m.end()]!r}"
            for y, line in enumerate(screen_text(app).splitlines()) for m in THUMB.finditer(line)
            if m.start() < width - 3]


@pytest.mark.parametrize("size", [(160, 48), (100, 30)], ids=["160x48", "100x30"])
async def test_no_stray_scrollbar_blocks(tiny_llama_dir, tmp_path, size):
    from test_tui_helpers import make_acts

    from lminspect.tui.widgets.activations import ActsPane

    write_run(tmp_path / "runs" / "base", steps=30)
    make_acts(tiny_llama_dir, tmp_path / "acts" / "base")
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", acts=[tmp_path / "acts"], remember=False)
    async with app.run_test(size=size) as pilot:
        await opened(pilot)
        await pilot.press("down", "down", "enter")
        pane = app.query_one("#weights-pane")
        await wait_until(pilot, lambda: "figures" in pane.timings, what="the embedding's statistics and figures")
        await pilot.pause()
        assert not _stray_scrollbars(app), _stray_scrollbars(app)
        sl = app.query_one("#runs-list", SelectionList)
        await press_until(pilot, "r", until=lambda: app.focused is sl, what="the Runs tab")
        await press_until(pilot, "space", until=lambda: "train loss" in app.query_one("#plot-loss", PlotView).text,
                          what="the loss plot")
        await pilot.pause()
        assert not _stray_scrollbars(app), _stray_scrollbars(app)
        await press_until(pilot, "a", until=lambda: bool(app.query(ActsPane))
                          and app.query_one(ActsPane).profile is not None, what="activation statistics")
        await pilot.pause()
        assert not _stray_scrollbars(app), _stray_scrollbars(app)


async def test_heatmap_in_shades_without_colour(tiny_llama_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")  # colour half-blocks would all read alike: shades instead
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pilot.press("down", "down", "enter")
        pane = app.query_one("#weights-pane")
        await wait_until(pilot, lambda: "figures" in pane.timings, what="the embedding's figures")
        text = app.query_one("#plot-heatmap", PlotView).text
        assert "▀" not in text and len({c for c in text if c in "░▒▓█"}) >= 2, text
