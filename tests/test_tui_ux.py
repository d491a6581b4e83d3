"""TUI details a daily user hits (issue 18): Escape leaves a field, the footer never offers a key
that a focused field would type, the Compare box reads without colour, the Runs tab's columns and
metric/x-axis choice, the command palette finding tensors and presets."""

from __future__ import annotations

import pytest
from test_tui_helpers import opened, palette_pick, press_until, wait_until, write_run
from textual.widgets import Input, SelectionList, TextArea

from lminspect.tui.app import LMInspectApp

SIZE = (120, 40)
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("private_cache")]



def _footer_keys(app) -> set[str]:
    return {b.binding.key for b in app.screen.active_bindings.values() if b.binding.show and b.enabled}


async def test_escape_leaves_fields_and_footer_keys_never_type(tiny_llama_dir, tmp_path):
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await wait_until(pilot, lambda: {"w", "s", "r", "a", "q"} <= _footer_keys(app), what="the footer's keys")
        await pilot.press("s")
        plan = app.query_one("#plan-input", Input)
        # each step waits for the condition it asserts: a key's effect lands a refresh later
        await wait_until(pilot, lambda: app.focused is plan, what="the plan field to take focus")
        assert not {"w", "s", "r", "a", "q"} & _footer_keys(app)  # they would type into the field
        await pilot.press("r")
        await wait_until(pilot, lambda: plan.value == "r", what="'r' to type into the plan field")
        assert app.query_one("#tabs").active == "stitch"
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.focused, Input | TextArea), what="escape to leave the field")
        await wait_until(pilot, lambda: "r" in _footer_keys(app), what="the footer keys to come back")
        await pilot.press("r")
        await wait_until(pilot, lambda: app.query_one("#tabs").active == "runs", what="'r' to open the Runs tab")
        # the prompt (a multi-line field) too
        await pilot.press("s")
        await wait_until(pilot, lambda: app.query_one("#tabs").active == "stitch", what="'s' to open the Stitch tab")
        app.query_one("#prompt", TextArea).focus()
        await wait_until(pilot, lambda: isinstance(app.focused, TextArea), what="the prompt to take focus")
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.focused, Input | TextArea), what="escape to leave the prompt")


async def test_compare_box_reads_without_colour(tiny_llama_dir, tmp_path):
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        plan = app.query_one("#plan-input", Input)
        await press_until(pilot, "s", until=lambda: app.focused is plan, what="the Stitch tab's plan field")
        box = app.query_one("#compare")
        assert "X" not in box.render().plain
        # ticked from the keyboard: a mouse click right after the tab switch sometimes lands before layout
        box.focus()
        await pilot.press("space")
        await wait_until(pilot, lambda: box.value, what="space to tick the box")
        assert "X" in box.render().plain


async def test_runs_list_columns_and_metric_and_x_choice(tmp_path):
    from textual.widgets import Select

    from lminspect.tui.widgets.plot import PlotView

    runs = tmp_path / "runs"
    write_run(runs / "base", steps=30)
    write_run(runs / "live", steps=12, offset=0.2, status="running")
    write_run(runs / "cut", steps=5, status="interrupted")
    app = LMInspectApp(None, runs_dir=runs, remember=False)
    async with app.run_test(size=SIZE) as pilot:
        from lminspect.tui.screens.picker import PickerScreen

        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen), what="the picker")
        await press_until(pilot, "escape", until=lambda: not isinstance(app.screen, PickerScreen),
                          what="the picker to close")
        sl = app.query_one("#runs-list", SelectionList)
        await press_until(pilot, "r", until=lambda: app.focused is sl and sl.option_count == 3,
                          what="the Runs tab's list")
        labels = {str(sl.get_option_at_index(i).value).rsplit("/", 1)[-1]: str(sl.get_option_at_index(i).prompt)
                  for i in range(sl.option_count)}
        assert "run · experiment · steps · last loss · status" in str(app.query_one("#runs-columns").render())
        assert labels["base"].startswith("base · gpt2ish · 30 · 2.") and labels["base"].endswith("finished")
        assert "· 12 ·" in labels["live"] and labels["live"].endswith("running")
        assert labels["cut"].endswith("stopped")
        pane = app.query_one("#runs-pane")
        await press_until(pilot, "space", until=lambda: len(sl.selected) == 1, what="base ticked")
        await press_until(pilot, "down", until=lambda: sl.highlighted == 1, what="the cursor on the second run")
        # base (ticked first) is the baseline
        await press_until(pilot, "space", until=lambda: len(sl.selected) == 2, what="cut ticked")
        await wait_until(pilot, lambda: len(pane.loaded) == 2
                         and "train loss" in app.query_one("#plot-loss", PlotView).text,
                         what="both runs' loss plot")
        metric = app.query_one("#metric", Select)
        assert {"lr", "grad_norm", "tok_s"} <= set(pane._metric_names)
        metric.value = "lr"
        await wait_until(pilot, lambda: "learning rate" in app.query_one("#plot-loss", PlotView).text,
                         what="the lr plot")
        app.query_one("#x-axis", Select).value = "steps"
        await wait_until(pilot, lambda: pane.x == "steps" and "steps" in app.query_one("#plot-loss", PlotView).text,
                         what="steps axis")
        assert "learning rate - baseline" in app.query_one("#plot-diff", PlotView).text


async def test_palette_finds_tensors_and_presets(tiny_llama_dir, tmp_path):
    from textual.widgets import Static

    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await palette_pick(pilot, "layers.2.mlp.up")
        await wait_until(pilot, lambda: "layers.2.mlp.up" in str(app.query_one("#tensor-header", Static).render()),
                         what="the tensor from the palette")
        assert app.query_one("#tabs").active == "weights"
        await palette_pick(pilot, "plan only_even", expect="only_even_layers")
        await wait_until(pilot, lambda: app.query_one("#plan-input", Input).value == "only_even_layers",
                         what="the preset from the palette")
        assert app.query_one("#tabs").active == "stitch"
        await wait_until(pilot, lambda: "ok:" in str(app.query_one("#plan-error", Static).render()),
                         what="the preset's plan to check out")


def test_short_activation_figure_keeps_its_legend_off_the_data():
    import re

    from lminspect.tui.plotting import series_figure

    kinds = ["resid_out", "attn_out", "mlp_out", "mlp_hidden"]
    fig = series_figure(range(4), [(k, [1.0 + i, 2.0, 3.0 + i, 4.0]) for i, k in enumerate(kinds)], 70, 12,
                        "std by plan position")
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln) for ln in fig.splitlines()]
    assert len(lines) == 12
    frame_end = max(i for i, ln in enumerate(lines) if "└" in ln)
    assert not any(k in ln for ln in lines[:frame_end] for k in kinds)  # nothing written over the lines
    assert all(any(k in ln for ln in lines[frame_end:]) for k in kinds)


async def test_save_key_writes_the_runs_figure_as_png(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    Image = pytest.importorskip("PIL.Image")
    from lminspect.tui.screens.picker import PickerScreen
    from lminspect.tui.screens.save_figure import SaveFigureScreen
    from lminspect.tui.widgets.plot import PlotView

    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    write_run(runs / "base", steps=30)
    app = LMInspectApp(None, runs_dir=runs, remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen), what="the picker")
        await press_until(pilot, "escape", until=lambda: not isinstance(app.screen, PickerScreen),
                          what="the picker to close")
        sl = app.query_one("#runs-list", SelectionList)
        await press_until(pilot, "r", until=lambda: app.focused is sl and sl.option_count == 1,
                          what="the Runs tab's list")
        await press_until(pilot, "space", until=lambda: len(sl.selected) == 1, what="the run ticked")
        await wait_until(pilot, lambda: "train loss" in app.query_one("#plot-loss", PlotView).text, what="loss plot")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, SaveFigureScreen), what="the save dialog")
        field = app.screen.query_one("#save-path", Input)
        await wait_until(pilot, lambda: app.focused is field, what="the path field to take focus")
        assert field.value == "loss.png"
        field.value = str(tmp_path / "curve.png")
        await pilot.press("enter")
        await wait_until(pilot, lambda: (tmp_path / "curve.png").exists(), what="the PNG")
    with Image.open(tmp_path / "curve.png") as im:
        assert im.format == "PNG"


def test_activation_profile_saver_writes_an_svg(tmp_path):
    pytest.importorskip("matplotlib")
    from lminspect.tui.widgets.activations import _series_saver

    save = _series_saver([0, 1, 2], [("std median", [0.1, 0.2, 5.0]), ("|x| max max", [1.0, 30.0, 900.0])],
                         "resid_out: std and |x| max over dims", "layer")
    text = save(tmp_path / "p.svg").read_text()
    assert "<svg" in text and "resid_out: std and |x| max over dims" in text


async def test_save_key_offers_the_tensor_figures(tiny_llama_dir, tmp_path, monkeypatch):
    """The Weights tab's histogram, heatmap and spectrum: each can be saved, PNG/SVG or text."""
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await pilot.press("down", "down", "enter")
        pane = app.query_one("#weights-pane")
        await wait_until(pilot, lambda: "figures" in pane.timings, what="the embedding's figures")
        for which, suffix, check in (("spectrum", ".svg", "<svg"), ("hist", ".txt", "histogram")):
            await _save_tensor_figure(pilot, tmp_path, which, suffix)
            assert check in (tmp_path / f"{which}{suffix}").read_text()


async def _save_tensor_figure(pilot, tmp_path, which: str, suffix: str) -> None:
    """ctrl+s, pick the embedding's ``which`` figure, save it as ``which + suffix``."""
    from textual.widgets import Select

    from lminspect.tui.screens.save_figure import SaveFigureScreen

    app = pilot.app
    await pilot.press("ctrl+s")
    await wait_until(pilot, lambda: isinstance(app.screen, SaveFigureScreen) and bool(app.screen.query("#save-which")),
                     what="the save dialog")
    dialog = app.screen
    choice = dialog.query_one("#save-which", Select)
    names = [str(o[0]) for o in choice._options]
    assert names == ["embed.tokens.weight_hist", "embed.tokens.weight_heatmap", "embed.tokens.weight_spectrum"], names
    choice.value = names.index(f"embed.tokens.weight_{which}")
    field = dialog.query_one("#save-path", Input)
    await wait_until(pilot, lambda: field.value.startswith(f"embed.tokens.weight_{which}."), what="the proposed name")
    field.value = f"{which}{suffix}"
    field.focus()
    await wait_until(pilot, lambda: app.focused is field, what="the path field")
    await pilot.press("enter")
    await wait_until(pilot, lambda: (tmp_path / f"{which}{suffix}").exists(), what=f"the {which} file")
