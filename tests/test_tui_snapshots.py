"""SVG snapshots of the main screens at a fixed size with deterministic content (no timings).

Each ``run_before`` waits for the state its picture shows (a worker's result painted, text typed
and checked), never for a fixed time.

Regenerate after a deliberate UI change with
``pytest tests/test_tui_snapshots.py --snapshot-update`` and review the SVGs.
"""

from __future__ import annotations

import shutil

import pytest
from test_tui_helpers import make_acts, opened, press_until, wait_until, write_run

from lminspect.tui.app import LMInspectApp

SIZE = (120, 40)
SMALL = (80, 24)  # the smallest supported terminal


@pytest.fixture
def tiny(tiny_llama_dir, tmp_path, monkeypatch):
    """The tiny Llama under a fixed name, a fixed working dir, and a private cache."""
    monkeypatch.setenv("LMINSPECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    dst = tmp_path / "tiny"
    shutil.copytree(tiny_llama_dir, dst)
    return dst


@pytest.mark.parametrize("size", [SIZE, SMALL], ids=["120x40", "80x24"])
def test_snapshot_weights_tensor_view(tiny, snap_compare, size):
    app = LMInspectApp(str(tiny), runs_dir="runs", remember=False)

    async def select_embedding(pilot):
        await opened(pilot)
        await pilot.press("down", "down", "enter")
        pane = app.query_one("#weights-pane")
        await wait_until(pilot, lambda: pane.current == "embed.tokens.weight" and "embed.tokens.weight" in pane.cache
                         and "figures" in pane.timings, what="statistics and figures")

    assert snap_compare(app, terminal_size=size, run_before=select_embedding)


def test_snapshot_weights_layers_overview(tiny, snap_compare):
    """The "layers" node: alpha by layer and component, as a table and a line per component."""
    app = LMInspectApp(str(tiny), runs_dir="runs", remember=False)

    async def select_layers(pilot):
        await opened(pilot)
        tree = app.query_one("#weights-tree")
        await press_until(pilot, "down", "down", "down", until=lambda: str(tree.cursor_node.label) == "layers",
                          what='the cursor on "layers"')
        await pilot.press("enter")
        pane = app.query_one("#weights-pane")
        await wait_until(pilot, lambda: pane.group is not None and "overview" in pane.timings
                         and app.query_one("#group-table").row_count == 4
                         and "alpha by layer" in app.query_one("#group-plot").text, what="the overview")

    assert snap_compare(app, terminal_size=SIZE, run_before=select_layers)


def test_snapshot_stitch_bad_plan(tiny, snap_compare):
    app = LMInspectApp(str(tiny), runs_dir="runs", remember=False)

    async def type_bad_plan(pilot):
        await opened(pilot)
        plan = app.query_one("#plan-input")
        await press_until(pilot, "s", until=lambda: app.focused is plan, what="the plan field")
        plan.cursor_blink = False  # a blinking cursor makes the picture timing-dependent
        await press_until(pilot, *"0-2,3r2,7", until=lambda: plan.value == "0-2,3r2,7", what="the plan typed")
        await wait_until(pilot, lambda: app.query_one("#plan-error").has_class("invalid"), what="the plan's error")

    assert snap_compare(app, terminal_size=SIZE, run_before=type_bad_plan)


def test_snapshot_runs_two_runs(tiny, tmp_path, snap_compare):
    write_run(tmp_path / "runs" / "baseline", steps=40)
    write_run(tmp_path / "runs" / "variant", steps=30, offset=0.15)
    app = LMInspectApp(str(tiny), runs_dir="runs", remember=False)

    async def tick_both(pilot):
        await opened(pilot)
        sl = app.query_one("#runs-list")
        await press_until(pilot, "r", until=lambda: app.focused is sl and sl.option_count == 2, what="the runs list")
        await press_until(pilot, "space", until=lambda: len(sl.selected) == 1, what="the first run ticked")
        await press_until(pilot, "down", until=lambda: sl.highlighted == 1, what="the cursor on the second run")
        await press_until(pilot, "space", until=lambda: len(sl.selected) == 2, what="the second run ticked")
        pane = app.query_one("#runs-pane")
        await wait_until(pilot, lambda: len(pane.loaded) == 2 and "baseline" in app.query_one("#plot-diff").text,
                         what="both runs plotted")

    assert snap_compare(app, terminal_size=SIZE, run_before=tick_both)


def test_snapshot_help(tiny, snap_compare):
    app = LMInspectApp(str(tiny), runs_dir="runs", remember=False)

    async def open_help(pilot):
        from lminspect.tui.screens.help import HelpScreen

        await opened(pilot)
        # the Markdown mounts its blocks (all in one batch) after parsing in a thread
        await press_until(pilot, "f1", until=lambda: isinstance(app.screen, HelpScreen)
                          and bool(app.screen.query("MarkdownTable")), what="the help text")

    assert snap_compare(app, terminal_size=SIZE, run_before=open_help)


def test_snapshot_activations(tiny, tmp_path, snap_compare):
    """The Activations tab on a results dir of the open model (so marked "this model")."""
    make_acts(tiny, tmp_path / "acts" / "base")
    app = LMInspectApp(str(tiny), runs_dir="runs", acts=["acts"], remember=False)

    async def show_activations(pilot):
        await opened(pilot)
        await press_until(pilot, "a", until=lambda: app.query_one("#tabs").active == "acts"
                          and bool(app.query("#acts-pane")), what="the Activations tab")
        pane = app.query_one("#acts-pane")
        sl = app.query_one("#acts-list")
        await wait_until(pilot, lambda: pane.profile is not None and pane.identity is not None and app.focused is sl
                         and "this model" in str(sl.get_option_at_index(0).prompt)
                         and "this model" in str(app.query_one("#acts-status").render()), what="statistics, marked")

    assert snap_compare(app, terminal_size=SIZE, run_before=show_activations)
