"""The Stitch tab's lens panel (Pilot): the logit lens of the current plan for the current prompt."""

from __future__ import annotations

import pytest
from test_tui_app import SIZE, _text
from test_tui_helpers import opened, press_until, wait_until
from textual.widgets import Input, Static

from lminspect.lens.render import text_of
from lminspect.tui.app import LMInspectApp
from lminspect.tui.widgets.plot import PlotView
from lminspect.tui.widgets.stitch import StitchPane

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("private_cache")]


def _shown(view: Static) -> str:
    """What the panel shows, as text (its content is a rich renderable or a plain line)."""
    content = view.content
    return content if isinstance(content, str) else text_of(content, width=118)



async def test_lens_panel_shows_the_plan_lens(tiny_llama_dir, tmp_path):
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        plan = app.query_one("#plan-input", Input)
        await press_until(pilot, "s", until=lambda: app.focused is plan, what="the plan field")
        await press_until(pilot, *"0,1,1*heads[0]=0,3", until=lambda: plan.value == "0,1,1*heads[0]=0,3",
                          what="the plan typed")
        pane = app.query_one(StitchPane)
        assert not pane.has_class("lens")
        app.query_one("#lens-target", Input).value = "id:42"
        await pilot.press("ctrl+l")
        view = app.query_one("#lens-view", Static)
        await wait_until(pilot, lambda: "embed" in _shown(view), what="the lens table", timeout=300)
        text = _shown(view)
        assert pane.has_class("lens") and app.query_one("#lens-panel").display
        # one row per plan position (the repeated, head-ablated layer 1 is its own row) and the plot
        for row in ("embed", "1#2~", "rank"):
            assert row in text
        assert "plan 0-1,1*heads[0]=0,3" in text
        assert "probability of" in app.query_one("#lens-plot", PlotView).text
        status = app.query_one("#gen-status", Static)
        await wait_until(pilot, lambda: "lens done" in _text(status), what="the status line")

        # a bad target is said in the panel, not a crash
        app.query_one("#lens-target", Input).value = "id:99999"
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: "out of range" in _shown(view), what="the error line", timeout=300)


async def test_lens_honours_compare_and_its_figure_saves(tiny_llama_dir, tmp_path, monkeypatch):
    from lminspect.tui.screens.save_figure import SaveFigureScreen

    monkeypatch.chdir(tmp_path)
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        plan = app.query_one("#plan-input", Input)
        await press_until(pilot, "s", until=lambda: app.focused is plan, what="the plan field")
        await press_until(pilot, *"0,1,3", until=lambda: plan.value == "0,1,3", what="the plan typed")
        app.query_one("#compare").value = True  # the Compare tick: baseline beside the plan
        app.query_one("#lens-target", Input).value = "id:42"
        await pilot.press("ctrl+l")
        view, plot = app.query_one("#lens-view", Static), app.query_one("#lens-plot", PlotView)
        await wait_until(pilot, lambda: "lens done" in _text(app.query_one("#gen-status", Static)), what="the lens",
                         timeout=300)
        text = _shown(view)
        assert "plan all" in text and "plan 0-1,3" in text  # a table each
        assert " all" in plot.text and " 0-1,3" in plot.text  # a line each, in the legend

        # ctrl+s saves the lens figure: as text here, PNG/SVG with the figures extra
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, SaveFigureScreen), what="the save dialog")
        field = app.screen.query_one("#save-path", Input)
        await wait_until(pilot, lambda: field.value.startswith("lens."), what="the proposed name")
        field.value = str(tmp_path / "lens.txt")
        await pilot.press("enter")
        await wait_until(pilot, lambda: (tmp_path / "lens.txt").exists(), what="the text figure")
        assert "probability of" in (tmp_path / "lens.txt").read_text()
