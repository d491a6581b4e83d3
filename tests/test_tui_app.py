"""The TUI driven headlessly with Pilot on tiny models made in the test."""

from __future__ import annotations

import collections
import os
import re
import threading

import pytest
from test_tui_helpers import make_acts, opened, palette_pick, press_until, wait_until, write_run
from textual.geometry import Region
from textual.widgets import DataTable, Input, Select, SelectionList, Static, Tree
from textual.widgets._select import SelectOverlay

from lminspect.tui.app import LMInspectApp
from lminspect.tui.screens.error import ErrorScreen
from lminspect.tui.screens.help import HelpScreen
from lminspect.tui.screens.picker import PickerScreen
from lminspect.tui.stats_text import cell
from lminspect.tui.widgets.activations import ActsPane
from lminspect.tui.widgets.plot import PlotView
from lminspect.tui.widgets.stitch import StitchPane
from lminspect.tui.widgets.stream import StreamView
from lminspect.tui.widgets.weights import WeightsPane

SIZE = (120, 40)
SMALL = (80, 24)  # the smallest supported terminal
# async tests run on anyio's pytest plugin (asyncio backend, tests/conftest.py)
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("private_cache")]



def _text(widget: Static) -> str:
    return str(widget.render())


_opened = opened  # the name other TUI test modules import from here


async def test_open_navigate_tree_and_see_statistics(tiny_llama_dir, tmp_path):
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await _opened(pilot)
        tree = app.query_one("#weights-tree", Tree)
        assert app.focused is tree
        # root -> embeddings -> embed.tokens.weight
        await pilot.press("down", "down", "enter")
        header = app.query_one("#tensor-header", Static)
        await wait_until(pilot, lambda: "embed.tokens.weight" in _text(header), what="the tensor's header")
        assert "300 x 64" in _text(header)
        pane = app.query_one(WeightsPane)
        await wait_until(pilot, lambda: "embed.tokens.weight" in pane.cache and "figures" in pane.timings,
                         what="statistics and figures")
        table = app.query_one("#stats-table", DataTable)
        keys = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
        assert {"mean", "std", "absmax", "kurtosis"} <= set(keys)
        embed_rows = _table_rows(table)
        assert "histogram" in app.query_one("#plot-hist", PlotView).text
        assert "heatmap" in app.query_one("#plot-heatmap", PlotView).text
        assert "singular values" in app.query_one("#plot-spectrum", PlotView).text

        # into layers/0/attn: q projection, which also has per-head norms
        await press_until(pilot, "down", until=lambda: tree.cursor_node is not None
                          and str(tree.cursor_node.label) == "layers", what='the cursor on "layers"')
        await pilot.press("space", "down", "space", "down", "space", "down", "enter")
        await wait_until(pilot, lambda: tree.cursor_node.data == "layers.0.attn.q.weight", what="the cursor on q")
        await wait_until(pilot, lambda: "layers.0.attn.q.weight" in pane.cache
                         and pane.current == "layers.0.attn.q.weight"
                         and "figures" in pane.timings, what="q statistics and figures")
        heads = app.query_one("#plot-heads", PlotView)
        assert heads.display and "per-head norm" in heads.text

        # coming back to a tensor paints from the in-memory cache, synchronously: its rows are there
        # when show_tensor returns (no worker, no clock)
        pane.show_tensor("embed.tokens.weight")
        assert _table_rows(table) == embed_rows
        await wait_until(pilot, lambda: "figures" in pane.timings, what="the cached tensor's figures")


class _Gated:
    """``store.stats`` held per tensor until the test opens its gate: the test, not a clock, decides
    how far each computation gets. A held call reports a stage before it waits and a late stage after;
    ``started`` and ``done`` list the names in call order. Tensors outside ``prefix`` run at once."""

    def __init__(self, monkeypatch, store, prefix: str = "") -> None:
        self.real, self.prefix = store.stats, prefix
        self.gates: dict[str, threading.Event] = collections.defaultdict(threading.Event)
        self.lock, self.all_open = threading.Lock(), False
        self.started: list[str] = []
        self.done: list[str] = []
        monkeypatch.setattr(store, "stats", self)

    def open(self, *names: str) -> None:
        with self.lock:
            for name in names:
                self.gates[name].set()

    def open_all(self) -> None:
        """Every gate, now and later (also at the test's end, so no worker thread stays blocked)."""
        with self.lock:
            self.all_open = True
            for gate in self.gates.values():
                gate.set()

    def __call__(self, name, *, progress=None, **kw):
        self.started.append(name)
        if name.startswith(self.prefix):
            if progress is not None:
                progress(f"slow stage {name}")
            with self.lock:
                gate = None if self.all_open else self.gates[name]
            if gate is not None:
                gate.wait(timeout=600)
            if progress is not None:
                progress(f"late stage {name}")
        out = self.real(name, **kw)
        self.done.append(name)
        return out


_SECONDS = re.compile(r" \.\.\. (\d+\.\d) s$")


async def test_stats_progress_line_ticks_and_clears(tiny_llama_dir, tmp_path, monkeypatch):
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await _opened(pilot)
        pane = app.query_one(WeightsPane)
        gated = _Gated(monkeypatch, pane.store)
        try:
            await _progress_line_ticks_and_clears(app, pilot, pane, gated)
        finally:
            gated.open_all()


async def _progress_line_ticks_and_clears(app, pilot, pane, gated: _Gated) -> None:
    status = app.query_one("#tensor-status", Static)
    pane.show_tensor("embed.tokens.weight")
    await wait_until(pilot, lambda: "slow stage embed.tokens.weight" in _text(status),
                     what="the stage in the status line")
    text = _text(status)
    assert text.startswith("computing statistics: slow stage embed.tokens.weight ... ")
    m = _SECONDS.search(text)
    assert m, text
    first = float(m.group(1))
    # the seconds tick while the computation runs (it runs until its gate opens)
    await wait_until(pilot, lambda: (m2 := _SECONDS.search(_text(status))) is not None and float(m2.group(1)) > first,
                     what="the seconds to tick")
    gated.open("embed.tokens.weight")
    await wait_until(pilot, lambda: "stats" in pane.timings, what="statistics painted")
    assert _text(status) == ""
    assert app.query_one("#stats-table", DataTable).row_count > 5
    assert pane._ticker is None  # the timer is stopped: nothing writes the line again

    # a new selection mid-computation: the old selection's stages never show again
    pane.show_tensor("layers.0.attn.q.weight")
    await wait_until(pilot, lambda: "slow stage layers.0.attn.q.weight" in _text(status), what="q's stage")
    pane.show_tensor("layers.0.attn.k.weight")
    assert "attn.q" not in _text(status)  # the new selection's line replaces it at once
    seen: list[str] = []

    def watching(cond):  # records every line the status shows while waiting
        return lambda: (seen.append(_text(status)), cond())[1]

    await wait_until(pilot, watching(lambda: "slow stage layers.0.attn.k.weight" in _text(status)), what="k's stage")
    # q's computation ends only now, after k was selected: its late stage must be dropped
    gated.open("layers.0.attn.q.weight")
    await wait_until(pilot, watching(lambda: "layers.0.attn.q.weight" in gated.done), what="q's worker to end")
    gated.open("layers.0.attn.k.weight")
    await wait_until(pilot, watching(lambda: "stats" in pane.timings), what="k's statistics")
    assert not [t for t in seen if "attn.q" in t], seen
    assert _text(status) == ""
    assert "layers.0.attn.k.weight" in _text(app.query_one("#tensor-header", Static))
    assert pane.current == "layers.0.attn.k.weight"
    assert pane._ticker is None


def _table_rows(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def _layer_names(store) -> list[str]:
    """The tensors under the tree's "layers" node, in tree order."""
    def flat(obj):
        if isinstance(obj, str):
            return [obj]
        items = obj.values() if isinstance(obj, dict) else obj
        return [n for item in items for n in flat(item)]

    return flat(store.tree()["layers"])


def _assert_by_layer_table(pane, table: DataTable, results: list[dict], stat: str) -> None:
    """The overview's table holds ``by_layer(results, stat)``: a layer column, one per component."""
    from lminspect.weights.stats import by_layer

    layers, cols = by_layer(results, stat)
    assert pane.overview == (layers, cols)
    assert [str(c.label) for c in table.ordered_columns] == ["layer", *cols]
    assert _table_rows(table) == [[str(i), *(cell(v[k]) for v in cols.values())] for k, i in enumerate(layers)]


async def test_layers_overview_statistic_select_and_layer_tables(tiny_llama_dir, tmp_path):
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await _opened(pilot)
        pane = app.query_one(WeightsPane)
        tree = app.query_one("#weights-tree", Tree)
        header = app.query_one("#tensor-header", Static)
        await press_until(pilot, "down", "down", "down", until=lambda: str(tree.cursor_node.label) == "layers",
                          what='the cursor on "layers"')
        await pilot.press("enter")  # a group: its overview (and the node opens)
        await wait_until(pilot, lambda: pane.group is not None and "overview" in pane.timings,
                         what="the layers overview")
        view = app.query_one("#tensor-view")
        assert view.has_class("-group")
        assert not app.query_one("#stats-table").display and not app.query_one("#plot-hist").display
        assert _text(app.query_one("#tensor-header", Static)).startswith("layers: 36 tensors in 4 layers")
        assert _text(app.query_one("#tensor-status", Static)) == ""
        names = _layer_names(pane.store)
        assert len(names) == 36
        results = [pane.store.stats(n) for n in names]  # the disk cache the worker filled
        table = app.query_one("#group-table", DataTable)
        _assert_by_layer_table(pane, table, results, "alpha")
        assert [str(c.label) for c in table.ordered_columns][1:5] == ["attn.q", "attn.k", "attn.v", "attn.o"]
        plot = app.query_one("#group-plot", PlotView)
        assert "alpha by layer" in plot.text and "attn.q" in plot.text and "mlp.down" in plot.text
        assert set(names) <= set(pane.stats_cache)

        # another statistic from the Select (keyboard: open, one down, Enter): the same statistics repainted
        select = app.query_one("#group-stat", Select)
        assert select.value == "alpha"
        select.focus()
        await wait_until(pilot, lambda: app.focused is select, what="the Select to take focus")
        overlay = select.query_one(SelectOverlay)
        await press_until(pilot, "enter", until=lambda: select.expanded and app.focused is overlay,
                          what="the Select's list to open")
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: select.value == "stable_rank" and pane.stat == "stable_rank",
                         what="the Select's new value")  # the repaint runs with the value's handler
        _assert_by_layer_table(pane, table, results, "stable_rank")
        assert "stable_rank by layer" in plot.text
        select.value = "std"  # norms have a std: their columns appear
        await wait_until(pilot, lambda: pane.stat == "std", what="the std overview")
        _assert_by_layer_table(pane, table, results, "std")
        assert {"attn_norm", "mlp_norm"} <= {str(c.label) for c in table.ordered_columns}

        # a single layer: a table of its tensors, no Select, no plot; from memory, no worker
        tree.focus()
        await wait_until(pilot, lambda: app.focused is tree, what="the tree to take focus")
        await pilot.press("down", "enter")  # layers/0
        await wait_until(pilot, lambda: _text(header).startswith("layers/0: 9 tensors") and "overview" in pane.timings,
                         what="layer 0's table")
        assert not select.display and not plot.display
        assert pane.overview is None
        assert [str(c.label) for c in table.ordered_columns] == [
            "tensor", "shape", "mean", "std", "absmax", "kurtosis", "frac_near_zero", "stable_rank",
            "effective_rank", "alpha"]
        by_name = dict(zip(names, results, strict=True))
        layer0 = [n for n in names if n.startswith("layers.0.")]
        expected = []
        for n in layer0:
            r = by_name[n]
            expected.append([n.removeprefix("layers.0."), "x".join(map(str, r["shape"])),
                             *(cell(r.get(k)) for k in ("mean", "std", "absmax", "kurtosis", "frac_near_zero",
                                                        "stable_rank", "effective_rank", "alpha"))])
        assert _table_rows(table) == expected
        assert expected[0][0] == "attn.q.weight" and expected[-1][-1] == "-"  # a norm has no spectrum

        # a part of a layer: layers/0/attn
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: _text(header).startswith("layers/0/attn: 4 tensors")
                         and "overview" in pane.timings,
                         what="layers/0/attn's table")
        assert [row[0] for row in _table_rows(table)] == ["q.weight", "k.weight", "v.weight", "o.weight"]

        # and a tensor again: its own view, exactly as before
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: tree.cursor_node.data == "layers.0.attn.q.weight", what="the cursor on q")
        await wait_until(pilot, lambda: pane.current == "layers.0.attn.q.weight" and "figures" in pane.timings,
                         what="q's view")
        assert not view.has_class("-group") and pane.group is None
        assert app.query_one("#stats-table").display and not app.query_one("#group-view").display
        assert "layers.0.attn.q.weight" in _text(app.query_one("#tensor-header", Static))
        assert app.query_one("#plot-heads", PlotView).display


_GROUP_LINE = re.compile(r"^statistics (\d+)/36: (layers\.\d+\.\S+) \.\.\. \d+\.\d s$")


async def test_overview_fills_in_and_a_leaf_selected_mid_computation_wins(tiny_llama_dir, tmp_path, monkeypatch):
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await _opened(pilot)
        pane = app.query_one(WeightsPane)
        gated = _Gated(monkeypatch, pane.store, prefix="layers.")  # the overview's tensors wait for the test
        try:
            await _overview_fills_in(app, pilot, pane, gated)
        finally:
            gated.open_all()


async def _overview_fills_in(app, pilot, pane, gated: _Gated) -> None:
    store = pane.store
    names = _layer_names(store)
    tree = app.query_one("#weights-tree", Tree)
    status = app.query_one("#tensor-status", Static)
    header = app.query_one("#tensor-header", Static)
    table = app.query_one("#group-table", DataTable)
    await press_until(pilot, "down", "down", "down", until=lambda: str(tree.cursor_node.label) == "layers",
                      what='the cursor on "layers"')
    await pilot.press("enter")
    await wait_until(pilot, lambda: pane.group is not None and bool(_GROUP_LINE.match(_text(status))),
                     what="the overview's status line")
    # the status line counts tensors and ticks; the table fills in a layer at a time: layers 0 and 1 may
    # finish, layers 2 and 3 wait
    gated.open(*names[:18])

    def counting(cond):  # every line shown while it fills is the overview's count
        def check() -> bool:
            assert _GROUP_LINE.match(_text(status)), _text(status)
            return cond()
        return check

    await wait_until(pilot, counting(lambda: table.row_count >= 2
                                     and _GROUP_LINE.match(_text(status)).group(2) == names[18]),
                     what="layers 0 and 1 in the table, the overview on layer 2")
    assert "overview" not in pane.timings  # still computing: layers 2 and 3 to go
    assert table.row_count < 4 and len(gated.started) == 19

    # a tensor selected now: its header and status, never the overview's again
    pane.show_tensor("embed.tokens.weight")
    n0 = len(gated.started)
    gated.open(names[18])  # the tensor the overview's worker was on finishes after the selection
    seen = []

    def watching(cond):
        return lambda: (seen.append((_text(header), _text(status))), cond())[1]

    layer_done = [n for n in gated.started if n.startswith("layers.")]
    await wait_until(pilot, watching(lambda: "stats" in pane.timings and set(layer_done) <= set(pane.stats_cache)),
                     what="the tensor's statistics and the overview's last tensor")
    assert all(h.startswith("embed.tokens.weight") for h, _ in seen), seen
    assert not [st for _, st in seen if st.startswith("statistics ")], seen
    assert _text(status) == ""
    assert pane.group is None and pane.current == "embed.tokens.weight"
    assert not app.query_one("#tensor-view").has_class("-group")
    # the overview's worker stopped: after the selection it started no other tensor (the one it was on
    # finished and, like all it computed, is kept in memory)
    assert not [n for n in gated.started[n0:] if n.startswith("layers.")]
    done = set(layer_done)

    # back to "layers": what was computed is reused, only the rest is computed
    n1 = len(gated.started)
    tree.move_cursor(next(n for n in tree.root.children if str(n.label) == "layers"))
    await wait_until(pilot, lambda: str(tree.cursor_node.label) == "layers", what='the cursor on "layers"')
    await pilot.press("enter")
    await wait_until(pilot, lambda: pane.group is not None and bool(_GROUP_LINE.match(_text(status))),
                     what="the overview's status line")
    first = int(_GROUP_LINE.match(_text(status)).group(1))
    assert first == len(done) + 1 and first > 9, first  # started past what is in memory
    gated.open_all()
    await wait_until(pilot, lambda: "overview" in pane.timings, what="the overview")
    assert not done & set(gated.started[n1:])
    assert table.row_count == 4
    results = [store.stats(n) for n in names]
    _assert_by_layer_table(pane, table, results, "alpha")


def _unusable(app, *selectors: str) -> list[str]:
    """What keeps each widget from use: hidden, no size, cut off by the screen, covered at its centre."""
    width, height = app.screen.size
    screen = Region(0, 0, width, height)
    problems = []
    for selector in selectors:
        widget = app.query_one(selector)
        region = widget.region
        if not (widget.display and widget.visible):
            problems.append(f"{selector} is hidden")
        elif not (region.width > 0 and region.height > 0):
            problems.append(f"{selector} has no size at {width}x{height}: {region}")
        elif not screen.contains_region(region):
            problems.append(f"{selector} at {region} is cut off by the {width}x{height} screen")
        else:
            x, y = region.center
            at, _ = app.screen.get_widget_at(int(x), int(y))
            if not (at is widget or widget in at.ancestors):
                problems.append(f"{selector} is covered by {at!r} at its centre")
    return problems


async def _usable(pilot, *selectors: str) -> None:
    """Each widget is shown, has a size, lies inside the screen and is not covered at its centre,
    once the layout has settled (a tab switch or new content lays out a refresh later)."""
    await wait_until(pilot, lambda: not _unusable(pilot.app, *selectors), what="usable widgets",
                     detail=lambda: _unusable(pilot.app, *selectors))


async def test_smallest_terminal_80x24(tiny_llama_dir, tmp_path):
    write_run(tmp_path / "runs" / "baseline", steps=40)
    write_run(tmp_path / "runs" / "variant", steps=30, offset=0.15)
    make_acts(tiny_llama_dir, tmp_path / "acts" / "base")
    make_acts(tiny_llama_dir, tmp_path / "acts" / "plan", plan="0-2,2,3")
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", acts=[tmp_path / "acts"], remember=False)
    async with app.run_test(size=SMALL) as pilot:
        assert tuple(app.screen.size) == SMALL
        await _opened(pilot)
        tabs = ("#tabs", "#tabs Tab#--content-tab-weights", "#tabs Tab#--content-tab-stitch",
                "#tabs Tab#--content-tab-runs", "#tabs Tab#--content-tab-acts")
        await pilot.press("down", "down", "enter")
        pane = app.query_one(WeightsPane)
        await wait_until(pilot, lambda: pane.current == "embed.tokens.weight" and "figures" in pane.timings,
                         what="statistics and figures")
        table = app.query_one("#stats-table", DataTable)
        assert table.row_count > 5
        await _usable(pilot, *tabs, "#weights-tree", "#tensor-view", "#tensor-header", "#tensor-status",
                      "#stats-table")
        assert "embed.tokens.weight" in _text(app.query_one("#tensor-header", Static))
        assert table.content_region.height >= 8, "the statistics table shows too few rows at 80x24"

        # the layers overview: Select, table, and the per-layer plot below them
        await pilot.press("down", "enter")  # "layers"
        await wait_until(pilot, lambda: pane.group is not None and "overview" in pane.timings,
                         what="the layers overview")
        await _usable(pilot, "#weights-tree", "#tensor-view", "#tensor-header", "#tensor-status", "#group-stat",
                      "#group-table")
        group_table = app.query_one("#group-table", DataTable)
        assert group_table.row_count == 4
        assert group_table.content_region.height >= 5, "the layers table shows too few rows at 80x24"
        app.query_one("#group-plot").scroll_visible(animate=False, immediate=True)
        await _usable(pilot, "#group-plot")
        assert "alpha by layer" in app.query_one("#group-plot", PlotView).text

        await pilot.click("#tabs Tab#--content-tab-stitch")
        plan = app.query_one("#plan-input", Input)
        await wait_until(pilot, lambda: app.query_one("#tabs").active == "stitch" and app.focused is plan,
                         what="the Stitch tab")
        await _usable(pilot, *tabs, "#plan-input", "#plan-error", "#prompt", "#max-tokens", "#compare", "#run",
                      "#stop", "#out-plan")
        await pilot.click("#plan-input")
        await press_until(pilot, *"0-2,3", until=lambda: plan.value == "0-2,3", what="the plan typed")
        await wait_until(pilot, lambda: "ok:" in _text(app.query_one("#plan-error", Static)), what="the plan checked")
        await _usable(pilot, "#run", "#out-plan")

        await pilot.click("#tabs Tab#--content-tab-runs")
        sl = app.query_one("#runs-list", SelectionList)
        await wait_until(pilot, lambda: app.query_one("#tabs").active == "runs" and app.focused is sl,
                         what="the Runs tab")
        await _usable(pilot, *tabs, "#runs-list", "#smoothing", "#runs-plots")
        assert sl.option_count == 2
        await pilot.click("#runs-list")
        await press_until(pilot, "space", until=lambda: len(sl.selected) == 1, what="a run ticked")
        await wait_until(pilot, lambda: "train loss" in app.query_one("#plot-loss", PlotView).text, what="loss plot")
        await _usable(pilot, "#runs-list", "#plot-loss")

        await pilot.click("#tabs Tab#--content-tab-acts")
        await wait_until(pilot, lambda: app.query_one("#tabs").active == "acts" and bool(app.query(ActsPane))
                         and bool(app.query("#acts-list")), what="the Activations tab and its list")
        acts = app.query_one(ActsPane)
        acts_list = app.query_one("#acts-list", SelectionList)
        await wait_until(pilot, lambda: acts.profile is not None and app.focused is acts_list,
                         what="activation statistics")
        await _usable(pilot, *tabs, "#acts-path", "#acts-list", "#acts-status", "#acts-kind", "#acts-metric",
                      "#acts-layers")
        assert "resid_out" in app.query_one("#acts-layers", PlotView).text
        await press_until(pilot, "down", until=lambda: acts_list.highlighted == 1, what="the second results dir")
        await press_until(pilot, "space", until=lambda: len(acts_list.selected) == 2, what="it ticked")
        await wait_until(pilot, lambda: bool(acts.diff_rows), what="the diff")  # the diff of the two
        # the per-site view and the diff lie below the first figure: each scrolls into view and fits
        for below in ("#acts-sites", "#acts-dims", "#acts-top", "#acts-diff", "#acts-diff-plot"):
            app.query_one(below).scroll_visible(animate=False, immediate=True)
            await _usable(pilot, below)


async def test_bad_plan_shows_inline_error_with_column(tiny_llama_dir, tmp_path):
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await _opened(pilot)
        plan = app.query_one("#plan-input", Input)
        await press_until(pilot, "s", until=lambda: app.focused is plan, what="the plan field")
        assert app.query_one("#tabs").active == "stitch"
        err = app.query_one("#plan-error", Static)
        await press_until(pilot, *"0-2,9", until=lambda: plan.value == "0-2,9", what="the plan typed")
        await wait_until(pilot, lambda: err.has_class("invalid"), what="the plan's error", detail=lambda: _text(err))
        text = _text(err)
        assert "column 5" in text and "out of range" in text
        assert "    ^" in text  # caret under the bad item
        await press_until(pilot, "backspace", "3", "r", "2", until=lambda: plan.value == "0-2,3r2",
                          what="the fix typed")
        await wait_until(pilot, lambda: err.has_class("valid"), what="the plan to check out", detail=lambda: _text(err))
        assert "ok: 5 layer calls: 0 1 2 3 3" in _text(err)
        await press_until(pilot, *",x", until=lambda: plan.value == "0-2,3r2,x", what="a bad item typed")
        await wait_until(pilot, lambda: "bad plan item 'x' at column 9" in _text(err), what="the bad item's error",
                         detail=lambda: _text(err))


async def test_run_streams_tokens_and_compare(tiny_llama_dir, tmp_path):
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await _opened(pilot)
        plan = app.query_one("#plan-input", Input)
        await press_until(pilot, "s", until=lambda: app.focused is plan, what="the plan field")
        await press_until(pilot, *"0,1,1,3", until=lambda: plan.value == "0,1,1,3", what="the plan typed")
        max_tokens = app.query_one("#max-tokens", Input)
        max_tokens.value = "12"
        pane = app.query_one(StitchPane)
        status = app.query_one("#gen-status", Static)
        assert app.focused is plan
        await pilot.press("enter")  # Enter in the plan field runs, like the Run button
        await wait_until(pilot, lambda: "first_piece" in pane.timings, what="the first token")
        await wait_until(pilot, lambda: "done" in _text(status), what="generation end", detail=lambda: _text(status))
        await wait_until(pilot, lambda: not app.query_one("#run").disabled, what="Run enabled again")
        text = app.query_one("#out-plan", StreamView).text
        assert text.startswith("Once upon a time") and len(text) > len("Once upon a time")
        assert "tok/s" in _text(status)

        # compare: the baseline column appears and fills too
        compare = app.query_one("#compare")
        compare.focus()  # ticked from the keyboard: a click can land before the layout settles
        await wait_until(pilot, lambda: app.focused is compare, what="the Compare box to take focus")
        await press_until(pilot, "space", until=lambda: pane.has_class("compare"), what="the compare layout")
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: "done" in _text(status) and "baseline" in _text(status), what="compare end",
                         detail=lambda: _text(status))
        base = app.query_one("#out-baseline", StreamView).text
        assert base.startswith("Once upon a time") and len(base) > len("Once upon a time")


async def test_stop_cancels_between_tokens(tiny_llama_dir, tmp_path, monkeypatch):
    from lminspect.tui import backend

    real = backend.generate_fn()

    class Held:
        """The real Generation, held after its first piece until Stop cancels it: Stop lands
        mid-stream however fast or loaded the machine is."""

        def __init__(self, *a, **kw):
            self.gen = real(*a, **kw)
            self.stats = self.gen.stats
            self.cancelled = threading.Event()

        def cancel(self):
            self.gen.cancel()
            self.cancelled.set()

        def __iter__(self):
            for i, piece in enumerate(self.gen):
                yield piece
                if i == 0:
                    self.cancelled.wait(timeout=600)

    monkeypatch.setattr(backend, "generate_fn", lambda: Held)
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await _opened(pilot)
        await press_until(pilot, "s", until=lambda: app.focused is app.query_one("#plan-input", Input),
                          what="the plan field")
        app.query_one("#max-tokens", Input).value = "100"
        pane = app.query_one(StitchPane)
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: "first_piece" in pane.timings, what="the first token")
        await pilot.press("ctrl+x")
        status = app.query_one("#gen-status", Static)
        await wait_until(pilot, lambda: "stopped" in _text(status), what="stop", detail=lambda: _text(status))
        assert "stop: cancelled" in _text(status)
        await wait_until(pilot, lambda: not app.query_one("#run").disabled, what="Run enabled again")


async def test_runs_tab_plots_loss_acc_and_diff(tmp_path):
    from lminspect.train import TrainConfig, train

    runs = tmp_path / "runs"
    tiny = {"n_layer": 1, "dim": 16, "n_head": 2}
    train(TrainConfig(exp="gpt2ish", run_dir=str(runs / "trained"), batch_size=2, seq_len=16, max_steps=4,
                      eval_every=0, save_every=0, model_args=tiny, optimizer="adamw", lr=3e-3, progress=False))
    write_run(runs / "written", steps=30)
    app = LMInspectApp(None, runs_dir=runs, remember=False)
    async with app.run_test(size=SIZE) as pilot:
        # no model: the picker offers the runs
        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen), what="the picker")
        await press_until(pilot, "escape", until=lambda: not isinstance(app.screen, PickerScreen),
                          what="the picker to close")
        sl = app.query_one("#runs-list", SelectionList)
        await press_until(pilot, "r", until=lambda: app.focused is sl, what="the Runs tab's list")
        assert sl.option_count == 2
        pane = app.query_one("#runs-pane")
        await press_until(pilot, "space", until=lambda: len(sl.selected) == 1, what="the first run ticked")  # "trained"
        await wait_until(pilot, lambda: len(pane.loaded) == 1
                         and "train loss" in app.query_one("#plot-loss", PlotView).text,
                         what="loss plot")
        assert "accuracy" in app.query_one("#plot-acc", PlotView).text
        assert "tick a second run" in app.query_one("#plot-diff", PlotView).text
        await press_until(pilot, "down", until=lambda: sl.highlighted == 1, what="the cursor on the second run")
        await press_until(pilot, "space", until=lambda: len(sl.selected) == 2, what="the second run ticked")
        await wait_until(pilot, lambda: "baseline" in app.query_one("#plot-diff", PlotView).text, what="diff plot")

        # a run that is still training: new rows appear without touching anything
        await wait_until(pilot, lambda: str(runs / "written") in pane.loaded, what="the second run loaded")
        before = len(pane.loaded[str(runs / "written")])
        stamp = (runs / "written" / "stats.jsonl").stat().st_mtime
        write_run(runs / "written", steps=40, status="running")
        # a later time stamp, as a writer seconds later leaves (the file system's clock may not have ticked)
        os.utime(runs / "written" / "stats.jsonl", (stamp + 5, stamp + 5))
        await wait_until(pilot, lambda: len(pane.loaded[str(runs / "written")]) == 40, what="live refresh")
        assert before == 30


async def test_picker_opens_a_typed_model_and_remembers_it(tiny_llama_dir, tmp_path):
    app = LMInspectApp(None, runs_dir=tmp_path / "runs")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen)
                         and bool(app.screen.query("#picker-input")), what="the picker")
        field = app.screen.query_one("#picker-input", Input)
        await wait_until(pilot, lambda: app.focused is field, what="path field focus")
        field.value = str(tiny_llama_dir)
        await pilot.press("enter")
        await _opened(pilot)
        assert app.query_one("#weights-tree", Tree).root.children
    from lminspect.tui import backend

    assert str(tiny_llama_dir.resolve()) in backend.recent_models()
    assert any(k.ref == str(tiny_llama_dir.resolve()) for k in backend.known_models())


async def test_bad_model_is_an_error_modal_not_a_crash(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\xff" * 64)
    app = LMInspectApp(str(bad), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, ErrorScreen)
                         and bool(app.screen.query("#error-body")), what="the error modal")
        assert "broken.safetensors" in _text(app.screen.query_one("#error-body", Static))
        await press_until(pilot, "escape", until=lambda: not isinstance(app.screen, ErrorScreen),
                          what="the modal to close")
        assert app.is_running


async def test_help_theme_palette_and_quit(tiny_llama_dir, tmp_path):
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await _opened(pilot)
        for key in ("f1", "question_mark"):
            await press_until(pilot, key, until=lambda: isinstance(app.screen, HelpScreen), what=f"help from {key}")
            await press_until(pilot, "escape", until=lambda: not isinstance(app.screen, HelpScreen),
                              what="help to close")
        dark = app.current_theme.dark
        await press_until(pilot, "ctrl+t", until=lambda: app.current_theme.dark is not dark, what="the other theme")
        # the command palette lists the app's own actions
        await palette_pick(pilot, "runs tab")
        await wait_until(pilot, lambda: app.query_one("#tabs").active == "runs", what="palette action")
        await pilot.press("q")
    assert not app.is_running


def test_tui_command_wires_the_app(monkeypatch, tmp_path):
    """``lminspect tui MODEL --runs DIR --acts DIR`` builds the app with those arguments (not run here)."""
    from typer.testing import CliRunner

    from lminspect.cli import app as cli
    from lminspect.tui import app as tui_app

    seen = {}
    monkeypatch.setattr(tui_app, "run_app", lambda model, runs, acts: seen.update(model=model, runs=runs, acts=acts))
    r = CliRunner().invoke(cli, ["tui", "somemodel", "--runs", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert seen == {"model": "somemodel", "runs": tmp_path, "acts": []}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    r = CliRunner().invoke(cli, ["tui", "somemodel", "--acts", str(tmp_path / "a"), "--acts", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    assert seen["acts"] == [tmp_path / "a", tmp_path / "b"]
    # a missing --acts path: one line and exit 2 before any window opens
    r = CliRunner().invoke(cli, ["tui", "somemodel", "--acts", str(tmp_path / "missing")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "--acts" in r.output


async def test_result_for_a_closed_model_is_dropped(tiny_llama_dir, tiny_llama_tied_dir, tmp_path):
    """A statistics worker still running when another model opens must not fill the new
    model's cache under a tensor name both models have."""
    from lminspect.tui.messages import TensorComputed
    from lminspect.weights import open_store

    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await _opened(pilot)
        pane = app.query_one(WeightsPane)
        old_job = pane._job  # a worker started for the first model carries this
        pane.set_store(open_store(tiny_llama_tied_dir), label="other")
        pane.post_message(TensorComputed("embed.tokens.weight", {"stats": {"mean": 123.0}}, old_job))
        pane.post_message(TensorComputed("norm.weight", {"stats": {"mean": 1.0}}, pane._store_job + 1))
        # messages arrive in order: once the second is in, the first was handled (and dropped)
        await wait_until(pilot, lambda: "norm.weight" in pane.cache, what="the current model's result")
        assert "embed.tokens.weight" not in pane.cache
