"""The Weights tab: a tensor tree on the left, the selected tensor's view on the right.

Selecting a tensor paints its name, shape, dtype and size at once (header
reads only ``store.info``), then a thread worker computes statistics
(``store.stats``, cached on disk by the weight store), a block-downsampled
|W| heatmap and per-head norms; results are cached in memory so coming back
to a tensor is instant. The worker is exclusive: a new selection supersedes
the old one, and the tree never waits for it.

While a first-time computation runs, ``#tensor-status`` says which stage it is in
(``store.stats``'s ``progress`` callback, posted from the worker thread as a
``StatsProgress`` message) and the seconds since the selection, ticked by a timer.
Each selection gets a job number; a stage from an older selection is dropped.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import DataTable, Static, Tree
from textual.widgets.tree import TreeNode
from textual.worker import Worker, WorkerState, get_current_worker

from lminspect.fsutil import human_bytes
from lminspect.tui import backend, plotting
from lminspect.tui.messages import StatsProgress, TensorComputed
from lminspect.tui.widgets.plot import PlotView

_HEAD_RE = re.compile(r"(?:^|\.)attn\.([qkvo])(?:\.weight)?$")

# rows x cols of the in-memory heatmap; the figure rebins it to the widget's size
HEATMAP_BLOCKS = (64, 192)

# how often the "computing statistics ... N s" line ticks
PROGRESS_TICK_SECONDS = 0.2


def progress_line(stage: str, elapsed: float) -> str:
    """The status line while statistics compute: ``computing statistics: STAGE ... 1.4 s``."""
    what = f": {stage}" if stage else ""
    return f"computing statistics{what} ... {elapsed:.1f} s"


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int | np.integer):
        return f"{int(v):,}"
    if isinstance(v, float | np.floating):
        return f"{float(v):.6g}"
    return str(v)


_NOT_IN_TABLE = {"name", "canonical", "hist_edges", "edges", "bin_edges"}


def scalar_stats(stats: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The rows of the statistics table: every scalar in the stats dict, in its order."""
    rows = []
    for key, value in stats.items():
        if key in _NOT_IN_TABLE:
            continue
        if key == "kurtosis" and isinstance(value, float | np.floating):
            # excess kurtosis comes from float32 power sums: ~1e-5 absolute, so 4 decimals
            rows.append((str(key), f"{float(value):.4f}"))
        elif isinstance(value, int | float | np.integer | np.floating | bool):
            rows.append((str(key), _fmt(value)))
        elif isinstance(value, str) and len(value) < 60:
            rows.append((str(key), value))
        elif isinstance(value, list | tuple) and 0 < len(value) <= 4 and all(isinstance(x, int | float) for x in value):
            rows.append((str(key), ", ".join(_fmt(x) for x in value)))
    return rows


def histogram_of(stats: Mapping[str, Any]) -> tuple[list[float], list[float]] | None:
    """(counts, edges) from the stats dict, whichever of the usual spellings it uses."""
    h = stats.get("histogram") or stats.get("hist")
    if h is None:
        return None
    edges_in = stats.get("hist_edges")
    if isinstance(h, list) and edges_in is not None and len(edges_in) == 2 and len(h) != 2:
        # the weight store gives counts plus the [lo, hi] range of equal-width bins
        lo, hi = float(edges_in[0]), float(edges_in[1])
        return list(map(float, h)), np.linspace(lo, hi, len(h) + 1).tolist()
    if isinstance(h, Mapping):
        counts = h.get("counts") or h.get("count") or h.get("values")
        edges = h.get("edges") or h.get("bin_edges") or h.get("bins")
    elif isinstance(h, list | tuple) and len(h) == 2:
        counts, edges = h
    else:
        return None
    if counts is None or edges is None:
        return None
    return list(map(float, counts)), list(map(float, edges))


def singular_values_of(stats: Mapping[str, Any]) -> list[float] | None:
    for key in ("singular_values", "sv", "svals", "spectrum"):
        sv = stats.get(key)
        if sv is not None:
            return [float(x) for x in sv]
    return None


class TensorView(VerticalScroll):
    """Header, statistics table and figures of one tensor."""

    DEFAULT_CSS = """
    TensorView { width: 1fr; padding: 0 1; }
    TensorView #tensor-header { height: auto; text-style: bold; }
    TensorView #tensor-status { height: auto; color: $text-muted; }
    TensorView DataTable { height: auto; max-height: 16; margin: 1 0; }
    TensorView PlotView { margin-bottom: 1; }
    TensorView PlotView.tall { height: 22; }
    TensorView PlotView.short { height: 14; }
    TensorView PlotView.-message { height: auto; }
    """

    def compose(self) -> ComposeResult:
        yield Static("Select a tensor in the tree (arrows + Enter, or click).", id="tensor-header", markup=False)
        yield Static("", id="tensor-status", markup=False)
        table: DataTable = DataTable(id="stats-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("statistic", "value")
        yield table
        yield PlotView("", id="plot-hist", classes="short")
        yield PlotView("", id="plot-heatmap", classes="tall")
        yield PlotView("", id="plot-spectrum", classes="short")
        yield PlotView("", id="plot-heads", classes="short")


class WeightsPane(Widget):
    """Tree + TensorView; owns the stats worker and the in-memory result cache."""

    DEFAULT_CSS = """
    WeightsPane { layout: horizontal; height: 1fr; }
    WeightsPane #weights-tree { width: 42; max-width: 45%; border-right: solid $primary-darken-2; }
    WeightsPane #weights-empty { padding: 1 2; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.store: Any = None
        self.cache: dict[str, dict[str, Any]] = {}
        self.current: str | None = None
        self.timings: dict[str, float] = {}  # for the benchmark: select/paint/stats times
        # the progress line of the running computation: its job number, stage, start, timer
        self._job = 0
        self._stage = ""
        self._started = 0.0
        self._ticker: Timer | None = None
        self._stats_worker: Worker | None = None

    def compose(self) -> ComposeResult:
        tree: Tree[str] = Tree("no model", id="weights-tree")
        tree.show_root = True
        yield tree
        yield TensorView(id="tensor-view")

    # -- filling the tree ------------------------------------------------------

    def set_store(self, store: Any, label: str | None = None) -> None:
        self._stop_progress()
        self._job += 1  # whatever still computes for the old model is stale
        self.store = store
        self.cache.clear()
        self.current = None
        self.query_one("#tensor-status", Static).update("")
        tree = self.query_one("#weights-tree", Tree)
        tree.clear()
        label = label or getattr(store, "name", "model")
        tree.root.set_label(f"{label} [{getattr(store, 'arch', '?')}]")
        try:
            grouping = store.tree()
        except Exception:  # no grouping: fall back to the flat key list
            grouping = list(store.keys())
        self._fill(tree.root, grouping)
        tree.root.expand()
        # open the first group so a new user sees tensors straight away
        for child in tree.root.children:
            if child.allow_expand:
                child.expand()
                break
        tree.move_cursor(tree.root)
        self.set_timer(0.5, self._warm_up)
        if self.app.query_one("#tabs").active == "weights" and not self.app.screen.is_modal:
            tree.focus()
        self.query_one("#tensor-header", Static).update(
            f"{label}: {len(list(store.keys()))} tensors, format {getattr(store, 'format', '?')}. "
            "Select a tensor (arrows + Enter)."
        )

    @work(thread=True, exit_on_error=False, group="warm-up")
    def _warm_up(self) -> None:
        """Import the statistics code (and torch) and load its compiled kernels (numba's disk
        cache; compiled once per machine) while the user reads the tree, not on first select."""
        try:
            import torch  # noqa: F401 - the spectrum (SVD) of the first tensor needs it

            import lminspect.weights.stats  # noqa: F401
            from lminspect.weights.stats_kernels import kernels

            kernels()
        except ImportError:
            pass

    def _leaf_label(self, label: str, name: str, path: tuple[str, ...] = ()) -> str:
        """``q.weight  576x576`` under layers/3/attn: the name minus the part the tree already says."""
        if label == name:
            for k in range(len(path), 0, -1):
                prefix = ".".join(path[:k]) + "."
                if name.startswith(prefix):
                    label = name[len(prefix) :]
                    break
            else:
                if len(path) >= 2 and path[0] == "layers" and name.startswith(f"layers.{path[1]}."):
                    label = name[len(f"layers.{path[1]}.") :]
        try:
            info = self.store.info(name)
            return f"{label}  {'x'.join(str(s) for s in info.shape)}"
        except Exception:
            return label

    def _fill(self, node: TreeNode[str], obj: Any, path: tuple[str, ...] = ()) -> None:
        """Add ``obj`` (nested dicts/lists of tensor names, the store's tree()) under ``node``."""
        if isinstance(obj, Mapping):
            for key, value in obj.items():
                name = self._tensor_name(value)
                if name is not None:
                    node.add_leaf(self._leaf_label(str(key), name, path), data=name)
                elif value:  # skip empty groups ("head" of a tied model, "other")
                    child = node.add(str(key), data=None)
                    self._fill(child, value, (*path, str(key)))
        elif isinstance(obj, list | tuple):
            for item in obj:
                name = self._tensor_name(item)
                if name is not None:
                    node.add_leaf(self._leaf_label(name, name, path), data=name)
                elif isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], str):
                    sub = self._tensor_name(item[1])
                    if sub is not None:
                        node.add_leaf(self._leaf_label(item[0], sub, path), data=sub)
                    else:
                        self._fill(node.add(item[0], data=None), item[1], (*path, item[0]))
        else:
            name = self._tensor_name(obj)
            if name is not None:
                node.add_leaf(self._leaf_label(name, name, path), data=name)

    def _tensor_name(self, value: Any) -> str | None:
        if isinstance(value, str):
            return value
        name = getattr(value, "name", None)
        if isinstance(name, str) and hasattr(value, "shape"):
            return name
        return None

    # -- selecting a tensor ----------------------------------------------------

    def on_tree_node_selected(self, event: Tree.NodeSelected[str]) -> None:
        if event.node.data:
            self.show_tensor(event.node.data)

    def show_tensor(self, name: str) -> None:
        """Paint the header now; statistics from the cache or a worker."""
        if self.store is None:
            return
        self.timings = {"selected": time.perf_counter()}
        self._stop_progress()
        self._job += 1
        self.current = name
        info = self.store.info(name)
        shape = " x ".join(str(s) for s in info.shape) or "scalar"
        stored = f"\nstored as {info.name}" if info.name != name else ""
        numel = int(np.prod(info.shape)) if len(info.shape) else 1
        self.query_one("#tensor-header", Static).update(
            f"{name}\nshape {shape}   dtype {info.dtype}   {numel:,} values   {human_bytes(info.nbytes)} on disk{stored}"
        )
        self.call_after_refresh(self._mark, "painted")
        cached = self.cache.get(name)
        if cached is not None:
            self._paint_result(name, cached)
            return
        self._start_progress()
        self.query_one("#stats-table", DataTable).clear()
        for plot_id in ("#plot-hist", "#plot-heatmap", "#plot-spectrum", "#plot-heads"):
            self.query_one(plot_id, PlotView).show_message("")
        # start the worker after this paint: its first import of torch holds the GIL for a while
        self.call_after_refresh(self._start_compute, name, self._job)

    def _mark(self, key: str) -> None:
        self.timings[key] = time.perf_counter()

    # -- the progress line ------------------------------------------------------

    def _start_progress(self) -> None:
        self._stage = ""
        self._started = time.perf_counter()
        self._ticker = self.set_interval(PROGRESS_TICK_SECONDS, self._tick)
        self._tick()

    def _stop_progress(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None
        self._stage = ""

    def _tick(self) -> None:
        if self._ticker is None:
            return
        elapsed = time.perf_counter() - self._started
        self.query_one("#tensor-status", Static).update(progress_line(self._stage, elapsed))

    def on_stats_progress(self, message: StatsProgress) -> None:
        message.stop()
        if message.job != self._job or message.name != self.current or self._ticker is None:
            return  # a superseded selection (or one already painted)
        self._stage = message.stage
        self._tick()

    # -- computing statistics (thread worker) ----------------------------------------

    def _start_compute(self, name: str, job: int) -> None:
        if job != self._job:
            return  # another tensor was selected before this one's worker started
        self._stats_worker = self._compute(name, job)

    @work(thread=True, exclusive=True, exit_on_error=False, group="tensor-stats")
    def _compute(self, name: str, job: int) -> None:
        worker = get_current_worker()
        store = self.store
        result: dict[str, Any] = {}

        def progress(stage: str) -> None:
            # runs in this thread: post_message is the thread-safe way to the UI
            if not worker.is_cancelled:
                try:
                    self.post_message(StatsProgress(name, job, stage))
                except RuntimeError:  # the app is shutting down
                    pass

        t0 = time.perf_counter()
        try:
            result["stats"] = dict(store.stats(name, progress=progress))
        except (ImportError, AttributeError) as exc:  # the stats module has not landed
            result["stats"] = {}
            result["stats_error"] = f"statistics are not available yet ({exc})"
        result["stats_seconds"] = time.perf_counter() - t0
        if worker.is_cancelled:
            return
        info = store.info(name)
        if len(info.shape) >= 2 or (len(info.shape) == 1 and info.shape[0] > 1):
            result["heatmap"] = plotting.downsample(store[name], *HEATMAP_BLOCKS)
        if worker.is_cancelled:
            return
        result["heads"] = self._head_norms(store, name, info)
        self.post_message(TensorComputed(name, result))

    @staticmethod
    def _head_norms(store: Any, name: str, info: Any) -> tuple[str, list[float]] | None:
        canonical = getattr(info, "canonical", None) or name
        m = _HEAD_RE.search(canonical)
        if m is None:
            return None
        which = m.group(1)
        heads = backend.n_heads(store, kv=which in ("k", "v"))
        if not heads:
            return None
        splitter = getattr(store, "heads", None)
        if splitter is not None:
            per_head = np.asarray(splitter(canonical), dtype=np.float32)  # [n_heads, ...]
            norms = [float(np.linalg.norm(h)) for h in per_head]
        else:
            norms = plotting.head_norms(store[name], heads, by_columns=which == "o")
        return (which, norms) if norms else None

    def on_tensor_computed(self, message: TensorComputed) -> None:
        self.cache[message.name] = message.result
        if message.name == self.current:
            self._paint_result(message.name, message.result)

    def _paint_result(self, name: str, result: dict[str, Any]) -> None:
        self._stop_progress()
        stats = result.get("stats") or {}
        table = self.query_one("#stats-table", DataTable)
        table.clear()
        for key, value in scalar_stats(stats):
            table.add_row(key, value)
        self.query_one("#tensor-status", Static).update(result.get("stats_error", ""))
        self.call_after_refresh(self._mark, "stats")
        self.call_after_refresh(self._paint_figures, name, result)

    def _paint_figures(self, name: str, result: dict[str, Any]) -> None:
        if name != self.current:
            return
        stats = result.get("stats") or {}
        info = self.store.info(name)
        hist = histogram_of(stats)
        hist_view = self.query_one("#plot-hist", PlotView)
        if hist:
            counts, edges = hist
            hist_view.show_figure(lambda w, h: plotting.histogram_figure(counts, edges, w, h))
        else:
            hist_view.show_message("histogram: not in the statistics")
        heat_view = self.query_one("#plot-heatmap", PlotView)
        blocks = result.get("heatmap")
        if blocks is not None:
            shape = tuple(info.shape)
            heat_view.show_figure(lambda w, h: plotting.heatmap_figure(blocks, shape, w, h))
        else:
            heat_view.show_message("heatmap: scalar tensor")
        sv_view = self.query_one("#plot-spectrum", PlotView)
        sv = singular_values_of(stats)
        if sv:
            sv_view.show_figure(lambda w, h: plotting.spectrum_figure(sv, w, h))
        else:
            sv_view.show_message("singular values: only for matrices" if len(info.shape) < 2 else "singular values: not computed")
        heads_view = self.query_one("#plot-heads", PlotView)
        heads = result.get("heads")
        if heads:
            which, norms = heads
            heads_view.display = True
            heads_view.show_figure(lambda w, h: plotting.heads_figure(norms, w, h, title=f"per-head norm ({which} projection)"))
        else:
            heads_view.display = False
        self._mark("figures")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.group == "tensor-stats":
            if event.worker is self._stats_worker:  # not a superseded selection's worker
                self._stop_progress()
                self.query_one("#tensor-status", Static).update("statistics failed (see the error)")
            self.app.report_error("Could not compute statistics", event.worker.error)
