"""The TUI driven headlessly with Pilot on tiny models made in the test."""

from __future__ import annotations

import re
import time

import pytest
from test_tui_helpers import make_acts, wait_until, write_run
from textual.geometry import Region
from textual.widgets import DataTable, Input, Select, SelectionList, Static, Tree

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


async def _opened(pilot) -> None:
    await wait_until(pilot, lambda: pilot.app.store is not None, what="the model to open")
    await pilot.pause()


async def test_open_navigate_tree_and_see_statistics(tiny_llama_dir, tmp_path):
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await _opened(pilot)
        tree = app.query_one("#weights-tree", Tree)
        assert app.focused is tree
        # root -> embeddings -> embed.tokens.weight
        await pilot.press("down", "down", "enter")
        header = app.query_one("#tensor-header", Static)
        assert "embed.tokens.weight" in _text(header)
        assert "300 x 64" in _text(header)
        pane = app.query_one(WeightsPane)
        await wait_until(pilot, lambda: "embed.tokens.weight" in pane.cache, what="statistics")
        await pilot.pause(0.2)
        table = app.query_one("#stats-table", DataTable)
        keys = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
        assert {"mean", "std", "absmax", "kurtosis"} <= set(keys)
        assert "histogram" in app.query_one("#plot-hist", PlotView).text
        assert "heatmap" in app.query_one("#plot-heatmap", PlotView).text
        assert "singular values" in app.query_one("#plot-spectrum", PlotView).text

        # into layers/0/attn: q projection, which also has per-head norms
        await pilot.press("down")  # "layers"
        assert tree.cursor_node is not None and str(tree.cursor_node.label) == "layers"
        await pilot.press("space", "down", "space", "down", "space", "down", "enter")
        assert tree.cursor_node.data == "layers.0.attn.q.weight"
        await wait_until(pilot, lambda: "layers.0.attn.q.weight" in pane.cache, what="q statistics")
        await pilot.pause(0.2)
        heads = app.query_one("#plot-heads", PlotView)
        assert heads.display and "per-head norm" in heads.text

        # coming back to a tensor paints from the in-memory cache, synchronously
        t0 = time.perf_counter()
        pane.show_tensor("embed.tokens.weight")
        assert time.perf_counter() - t0 < 0.5
        await pilot.pause()
        assert table.row_count > 5


def _slow_stats(monkeypatch, store, seconds: float = 0.6) -> None:
    """``store.stats`` that reports a stage, sleeps, reports a late stage, then returns the real stats."""
    real = store.stats

    def slow(name, *, progress=None, **kw):
        if progress is not None:
            progress(f"slow stage {name}")
        time.sleep(seconds)
        if progress is not None:
            progress(f"late stage {name}")
        return real(name, **kw)

    monkeypatch.setattr(store, "stats", slow)


_SECONDS = re.compile(r" \.\.\. (\d+\.\d) s$")


async def test_stats_progress_line_ticks_and_clears(tiny_llama_dir, tmp_path, monkeypatch):
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await _opened(pilot)
        pane = app.query_one(WeightsPane)
        _slow_stats(monkeypatch, pane.store)
        status = app.query_one("#tensor-status", Static)

        pane.show_tensor("embed.tokens.weight")
        await wait_until(pilot, lambda: "slow stage embed.tokens.weight" in _text(status), timeout=10,
                         what="the stage in the status line")
        text = _text(status)
        assert text.startswith("computing statistics: slow stage embed.tokens.weight ... ")
        m = _SECONDS.search(text)
        assert m, text
        first = float(m.group(1))
        # the seconds tick while the computation runs
        await wait_until(pilot, lambda: (m2 := _SECONDS.search(_text(status))) is not None and float(m2.group(1)) > first,
                         timeout=10, what="the seconds to tick")
        await wait_until(pilot, lambda: "stats" in pane.timings, what="statistics painted")
        await pilot.pause()
        assert _text(status) == ""
        assert app.query_one("#stats-table", DataTable).row_count > 5
        await pilot.pause(0.5)  # the timer is stopped: nothing writes the line again
        assert _text(status) == ""

        # a new selection mid-computation: the old selection's stages never show again
        pane.show_tensor("layers.0.attn.q.weight")
        await wait_until(pilot, lambda: "slow stage layers.0.attn.q.weight" in _text(status), timeout=10,
                         what="q's stage")
        pane.show_tensor("layers.0.attn.k.weight")
        assert "attn.q" not in _text(status)  # the new selection's line replaces it at once
        seen = []
        while "stats" not in pane.timings:
            seen.append(_text(status))
            assert len(seen) < 600, "timed out waiting for k's statistics"
            await pilot.pause(0.02)
        await pilot.pause()
        assert not [t for t in seen if "attn.q" in t], seen
        assert any("slow stage layers.0.attn.k.weight" in t for t in seen), seen
        assert _text(status) == ""
        assert "layers.0.attn.k.weight" in _text(app.query_one("#tensor-header", Static))
        assert pane.current == "layers.0.attn.k.weight"
        # the superseded worker's late stage arrived after k was selected and was dropped
        await pilot.pause(0.7)
        assert _text(status) == ""


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
        await pilot.press("down", "down", "down")
        assert str(tree.cursor_node.label) == "layers"
        await pilot.press("enter")  # a group: its overview (and the node opens)
        await wait_until(pilot, lambda: "overview" in pane.timings, what="the layers overview")
        await pilot.pause(0.2)
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
        await pilot.press("enter", "down", "enter")
        await wait_until(pilot, lambda: select.value == "stable_rank", timeout=5, what="the Select's new value")
        await pilot.pause()
        assert pane.stat == "stable_rank"
        _assert_by_layer_table(pane, table, results, "stable_rank")
        assert "stable_rank by layer" in plot.text
        select.value = "std"  # norms have a std: their columns appear
        await pilot.pause()
        _assert_by_layer_table(pane, table, results, "std")
        assert {"attn_norm", "mlp_norm"} <= {str(c.label) for c in table.ordered_columns}

        # a single layer: a table of its tensors, no Select, no plot; from memory, no worker
        tree.focus()
        await pilot.press("down", "enter")  # layers/0
        await wait_until(pilot, lambda: "overview" in pane.timings, what="layer 0's table")
        await pilot.pause()
        assert _text(app.query_one("#tensor-header", Static)).startswith("layers/0: 9 tensors")
        assert not select.display and not plot.display
        assert pane.overview is None
        assert [str(c.label) for c in table.ordered_columns] == [
            "tensor", "shape", "mean", "std", "absmax", "kurt", "~0", "stable r", "eff r", "alpha"]
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
        await wait_until(pilot, lambda: "overview" in pane.timings, what="layers/0/attn's table")
        await pilot.pause()
        assert _text(app.query_one("#tensor-header", Static)).startswith("layers/0/attn: 4 tensors")
        assert [row[0] for row in _table_rows(table)] == ["q.weight", "k.weight", "v.weight", "o.weight"]

        # and a tensor again: its own view, exactly as before
        await pilot.press("down", "enter")
        assert tree.cursor_node.data == "layers.0.attn.q.weight"
        await wait_until(pilot, lambda: "figures" in pane.timings, what="q's view")
        await pilot.pause()
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
        store = pane.store
        real = store.stats
        calls: list[tuple[float, str]] = []

        def slow(name, *, progress=None, **kw):
            calls.append((time.perf_counter(), name))
            time.sleep(0.08)
            return real(name, **kw)

        monkeypatch.setattr(store, "stats", slow)
        tree = app.query_one("#weights-tree", Tree)
        status = app.query_one("#tensor-status", Static)
        header = app.query_one("#tensor-header", Static)
        table = app.query_one("#group-table", DataTable)
        await pilot.press("down", "down", "down", "enter")  # "layers"
        # the status line counts tensors and ticks; the table fills in a layer at a time
        rows_seen: set[int] = set()
        while table.row_count < 2:
            text = _text(status)
            assert _GROUP_LINE.match(text), text
            rows_seen.add(table.row_count)
            assert len(rows_seen) < 1000
            await pilot.pause(0.02)
        assert "overview" not in pane.timings  # still computing: layers 2 and 3 to go
        assert _GROUP_LINE.match(_text(status))
        assert table.row_count < 4

        # a tensor selected now: its header and status, never the overview's again
        selected = time.perf_counter()
        pane.show_tensor("embed.tokens.weight")
        seen = []
        while "stats" not in pane.timings or len(seen) < 60:
            seen.append((_text(header), _text(status)))
            assert len(seen) < 1000, "timed out waiting for the tensor's statistics"
            await pilot.pause(0.02)
        assert all(h.startswith("embed.tokens.weight") for h, _ in seen), seen
        assert not [st for _, st in seen if st.startswith("statistics ")], seen
        assert _text(status) == ""
        assert pane.group is None and pane.current == "embed.tokens.weight"
        assert not app.query_one("#tensor-view").has_class("-group")
        # the overview's worker stopped: at most the tensor it was on finished after the selection
        late = [n for t, n in calls if t > selected and n.startswith("layers.")]
        assert len(late) <= 1, late
        done = {n for _, n in calls if n.startswith("layers.")}  # all kept in memory, the late one too
        assert done <= set(pane.stats_cache)

        # back to "layers": what was computed is reused, only the rest is computed
        calls.clear()
        tree.move_cursor(next(n for n in tree.root.children if str(n.label) == "layers"))
        await pilot.press("enter")
        first = None
        while "overview" not in pane.timings:
            m = _GROUP_LINE.match(_text(status))
            if m and first is None:
                first = int(m.group(1))
            await pilot.pause(0.02)
        assert first is not None and first > 9, first  # started past layer 0, in memory
        assert not done & {n for _, n in calls}
        assert table.row_count == 4
        results = [store.stats(n) for n in _layer_names(store)]
        _assert_by_layer_table(pane, table, results, "alpha")


def _assert_usable(app, *selectors: str) -> None:
    """Each widget is shown, has a size, lies inside the screen and is not covered at its centre."""
    width, height = app.screen.size
    screen = Region(0, 0, width, height)
    for selector in selectors:
        widget = app.query_one(selector)
        region = widget.region
        assert widget.display and widget.visible, f"{selector} is hidden"
        assert region.width > 0 and region.height > 0, f"{selector} has no size at {width}x{height}: {region}"
        assert screen.contains_region(region), f"{selector} at {region} is cut off by the {width}x{height} screen"
        x, y = region.center
        at, _ = app.screen.get_widget_at(int(x), int(y))
        assert at is widget or widget in at.ancestors, f"{selector} is covered by {at!r} at its centre"


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
        await wait_until(pilot, lambda: "figures" in pane.timings, what="statistics and figures")
        await pilot.pause(0.2)
        table = app.query_one("#stats-table", DataTable)
        assert table.row_count > 5
        _assert_usable(app, *tabs, "#weights-tree", "#tensor-view", "#tensor-header", "#tensor-status",
                       "#stats-table")
        assert "embed.tokens.weight" in _text(app.query_one("#tensor-header", Static))
        assert table.content_region.height >= 8, "the statistics table shows too few rows at 80x24"

        # the layers overview: Select, table, and the per-layer plot below them
        await pilot.press("down", "enter")  # "layers"
        await wait_until(pilot, lambda: "overview" in pane.timings, what="the layers overview")
        await pilot.pause(0.2)
        _assert_usable(app, "#weights-tree", "#tensor-view", "#tensor-header", "#tensor-status", "#group-stat",
                       "#group-table")
        group_table = app.query_one("#group-table", DataTable)
        assert group_table.row_count == 4
        assert group_table.content_region.height >= 5, "the layers table shows too few rows at 80x24"
        app.query_one("#group-plot").scroll_visible(animate=False, immediate=True)
        await pilot.pause()
        _assert_usable(app, "#group-plot")
        assert "alpha by layer" in app.query_one("#group-plot", PlotView).text

        await pilot.click("#tabs Tab#--content-tab-stitch")
        await wait_until(pilot, lambda: app.query_one("#tabs").active == "stitch", what="the Stitch tab")
        await pilot.pause()
        _assert_usable(app, *tabs, "#plan-input", "#plan-error", "#prompt", "#max-tokens", "#compare", "#run",
                       "#stop", "#out-plan")
        await pilot.click("#plan-input")
        await pilot.press(*"0-2,3")
        assert "ok:" in _text(app.query_one("#plan-error", Static))
        _assert_usable(app, "#run", "#out-plan")

        await pilot.click("#tabs Tab#--content-tab-runs")
        await wait_until(pilot, lambda: app.query_one("#tabs").active == "runs", what="the Runs tab")
        await pilot.pause()
        _assert_usable(app, *tabs, "#runs-list", "#smoothing", "#runs-plots")
        sl = app.query_one("#runs-list", SelectionList)
        assert sl.option_count == 2
        await pilot.click("#runs-list")
        await pilot.press("space")
        await wait_until(pilot, lambda: "train loss" in app.query_one("#plot-loss", PlotView).text, what="loss plot")
        _assert_usable(app, "#runs-list", "#plot-loss")

        await pilot.click("#tabs Tab#--content-tab-acts")
        await wait_until(pilot, lambda: app.query_one("#tabs").active == "acts", what="the Activations tab")
        acts = app.query_one(ActsPane)
        await wait_until(pilot, lambda: acts.profile is not None, what="activation statistics")
        await pilot.pause(0.2)
        assert app.focused is app.query_one("#acts-list", SelectionList)
        _assert_usable(app, *tabs, "#acts-path", "#acts-list", "#acts-status", "#acts-kind", "#acts-metric",
                       "#acts-layers")
        assert "resid_out" in app.query_one("#acts-layers", PlotView).text
        await pilot.press("down", "space")  # tick the second results dir: the diff
        await wait_until(pilot, lambda: bool(acts.diff_rows), what="the diff")
        await pilot.pause(0.2)
        # the per-site view and the diff lie below the first figure: each scrolls into view and fits
        for below in ("#acts-sites", "#acts-dims", "#acts-top", "#acts-diff", "#acts-diff-plot"):
            app.query_one(below).scroll_visible(animate=False, immediate=True)
            await pilot.pause()
            _assert_usable(app, below)


async def test_bad_plan_shows_inline_error_with_column(tiny_llama_dir, tmp_path):
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await _opened(pilot)
        await pilot.press("s")
        assert app.query_one("#tabs").active == "stitch"
        assert app.focused is app.query_one("#plan-input", Input)
        await pilot.press(*"0-2,9")
        err = app.query_one("#plan-error", Static)
        text = _text(err)
        assert "column 5" in text and "out of range" in text
        assert "    ^" in text  # caret under the bad item
        assert err.has_class("invalid")
        await pilot.press("backspace", "3", "r", "2")
        text = _text(err)
        assert err.has_class("valid") and "ok: 5 layer calls: 0 1 2 3 3" in text
        await pilot.press(*",x")
        assert "bad plan item 'x' at column 9" in _text(err)


async def test_run_streams_tokens_and_compare(tiny_llama_dir, tmp_path):
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await _opened(pilot)
        await pilot.press("s")
        await pilot.press(*"0,1,1,3")
        max_tokens = app.query_one("#max-tokens", Input)
        max_tokens.value = "12"
        pane = app.query_one(StitchPane)
        assert app.focused is app.query_one("#plan-input", Input)
        await pilot.press("enter")  # Enter in the plan field runs, like the Run button
        await wait_until(pilot, lambda: "first_piece" in pane.timings, what="the first token")
        await wait_until(pilot, lambda: "done" in _text(app.query_one("#gen-status", Static)), what="generation end")
        text = app.query_one("#out-plan", StreamView).text
        assert text.startswith("Once upon a time") and len(text) > len("Once upon a time")
        assert "tok/s" in _text(app.query_one("#gen-status", Static))
        assert not app.query_one("#run").disabled

        # compare: the baseline column appears and fills too
        await pilot.click("#compare")
        assert pane.has_class("compare")
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: "done" in _text(app.query_one("#gen-status", Static)) and
                         "baseline" in _text(app.query_one("#gen-status", Static)), what="compare end")
        base = app.query_one("#out-baseline", StreamView).text
        assert base.startswith("Once upon a time") and len(base) > len("Once upon a time")


async def test_stop_cancels_between_tokens(tiny_llama_dir, tmp_path, monkeypatch):
    from lminspect.tui import backend

    real = backend.generate_fn()

    class Slow:
        """The real Generation, slowed to ~20 tokens/s so Stop lands mid-stream."""

        def __init__(self, *a, **kw):
            self.gen = real(*a, **kw)
            self.stats = self.gen.stats

        def cancel(self):
            self.gen.cancel()

        def __iter__(self):
            for piece in self.gen:
                time.sleep(0.05)
                yield piece

    monkeypatch.setattr(backend, "generate_fn", lambda: Slow)
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await _opened(pilot)
        await pilot.press("s")
        app.query_one("#max-tokens", Input).value = "100"
        pane = app.query_one(StitchPane)
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: "first_piece" in pane.timings, what="the first token")
        await pilot.press("ctrl+x")
        status = app.query_one("#gen-status", Static)
        await wait_until(pilot, lambda: "stopped" in _text(status), timeout=5, what="stop")
        assert "stop: cancelled" in _text(status)
        assert not app.query_one("#run").disabled


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
        await pilot.press("escape")
        await pilot.press("r")
        sl = app.query_one("#runs-list", SelectionList)
        assert sl.option_count == 2
        assert app.focused is sl
        await pilot.press("space")  # tick the first run ("trained")
        await wait_until(pilot, lambda: "train loss" in app.query_one("#plot-loss", PlotView).text, what="loss plot")
        assert "accuracy" in app.query_one("#plot-acc", PlotView).text
        assert "tick a second run" in app.query_one("#plot-diff", PlotView).text
        await pilot.press("down", "space")
        await wait_until(pilot, lambda: "baseline" in app.query_one("#plot-diff", PlotView).text, what="diff plot")

        # a run that is still training: new rows appear without touching anything
        pane = app.query_one("#runs-pane")
        before = len(pane.loaded[str(runs / "written")])
        time.sleep(0.01)
        write_run(runs / "written", steps=40, status="running")
        await wait_until(pilot, lambda: len(pane.loaded[str(runs / "written")]) == 40, timeout=10,
                         what="live refresh")
        assert before == 30


async def test_picker_opens_a_typed_model_and_remembers_it(tiny_llama_dir, tmp_path):
    app = LMInspectApp(None, runs_dir=tmp_path / "runs")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen)
                         and bool(app.screen.query("#picker-input")), what="the picker")
        field = app.screen.query_one("#picker-input", Input)
        await wait_until(pilot, lambda: app.focused is field, timeout=5, what="path field focus")
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
        await pilot.press("escape")
        assert not isinstance(app.screen, ErrorScreen)
        assert app.is_running


async def test_help_theme_palette_and_quit(tiny_llama_dir, tmp_path):
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await _opened(pilot)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        dark = app.current_theme.dark
        await pilot.press("ctrl+t")
        assert app.current_theme.dark is not dark
        # the command palette lists the app's own actions
        await pilot.press("ctrl+p")
        await pilot.press(*"runs tab")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.query_one("#tabs").active == "runs", timeout=5, what="palette action")
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
        await pilot.pause()
        pane.post_message(TensorComputed("embed.tokens.weight", {"stats": {"mean": 123.0}}, old_job))
        pane.post_message(TensorComputed("norm.weight", {"stats": {"mean": 1.0}}, pane._store_job + 1))
        await pilot.pause(0.1)
        assert "embed.tokens.weight" not in pane.cache and "norm.weight" in pane.cache
