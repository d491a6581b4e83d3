"""SVG snapshots of the main screens at a fixed size with deterministic content (no timings).

Regenerate after a deliberate UI change with
``pytest tests/test_tui_snapshots.py --snapshot-update`` and review the SVGs.
"""

from __future__ import annotations

import shutil

import pytest
from test_tui_helpers import make_acts, wait_until, write_run

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
        await wait_until(pilot, lambda: app.store is not None, what="open")
        await pilot.press("down", "down", "enter")
        pane = app.query_one("#weights-pane")
        await wait_until(pilot, lambda: "embed.tokens.weight" in pane.cache, what="stats")
        await wait_until(pilot, lambda: "figures" in pane.timings, what="figures")

    assert snap_compare(app, terminal_size=size, run_before=select_embedding)


def test_snapshot_weights_layers_overview(tiny, snap_compare):
    """The "layers" node: alpha by layer and component, as a table and a line per component."""
    app = LMInspectApp(str(tiny), runs_dir="runs", remember=False)

    async def select_layers(pilot):
        await wait_until(pilot, lambda: app.store is not None, what="open")
        await pilot.press("down", "down", "down", "enter")
        pane = app.query_one("#weights-pane")
        await wait_until(pilot, lambda: "overview" in pane.timings, what="the overview")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=select_layers)


def test_snapshot_stitch_bad_plan(tiny, snap_compare):
    app = LMInspectApp(str(tiny), runs_dir="runs", remember=False)

    async def type_bad_plan(pilot):
        await wait_until(pilot, lambda: app.store is not None, what="open")
        await pilot.press("s")
        app.query_one("#plan-input").cursor_blink = False  # a blinking cursor makes the picture timing-dependent
        await pilot.press(*"0-2,3r2,7")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=type_bad_plan)


def test_snapshot_runs_two_runs(tiny, tmp_path, snap_compare):
    write_run(tmp_path / "runs" / "baseline", steps=40)
    write_run(tmp_path / "runs" / "variant", steps=30, offset=0.15)
    app = LMInspectApp(str(tiny), runs_dir="runs", remember=False)

    async def tick_both(pilot):
        await wait_until(pilot, lambda: app.store is not None, what="open")
        await pilot.press("r", "space", "down", "space")
        pane = app.query_one("#runs-pane")
        await wait_until(pilot, lambda: len(pane.loaded) == 2, what="runs")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=tick_both)


def test_snapshot_help(tiny, snap_compare):
    app = LMInspectApp(str(tiny), runs_dir="runs", remember=False)

    async def open_help(pilot):
        await wait_until(pilot, lambda: app.store is not None, what="open")
        await pilot.press("f1")

    assert snap_compare(app, terminal_size=SIZE, run_before=open_help)


def test_snapshot_activations(tiny, tmp_path, snap_compare):
    """The Activations tab on a results dir of the open model (so marked "this model")."""
    make_acts(tiny, tmp_path / "acts" / "base")
    app = LMInspectApp(str(tiny), runs_dir="runs", acts=["acts"], remember=False)

    async def show_activations(pilot):
        await wait_until(pilot, lambda: app.store is not None, what="open")
        await pilot.pause()
        await pilot.press("a")
        pane = app.query_one("#acts-pane")
        await wait_until(pilot, lambda: pane.profile is not None and pane.identity is not None, what="statistics")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=show_activations)
