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

Selecting a group node shows an overview of the tensors under it instead (the view gets
the ``-group`` class, which hides the tensor's table and figures): for ``layers``, one
statistic (a Select: alpha, stable rank, ...) as a layers x components table and a line
per component (``lminspect.weights.stats.by_layer``, drawn by ``plotting.by_layer_figure``);
for a layer or a part of one (``layers/3``, ``layers/3/attn``), a table of its tensors.
Statistics already in memory are used as they are; the rest are computed one tensor at a
time by an exclusive thread worker that posts ``GroupProgress`` messages (the status line
says ``statistics k/N: NAME ... s``) and stops between tensors when cancelled. The table and
plot repaint as results arrive (at most every ``GROUP_REPAINT_SECONDS``). Any other
selection cancels the worker, and the job number keeps a superseded overview off the view.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import DataTable, Select, Static, Tree
from textual.widgets.tree import TreeNode
from textual.worker import Worker, WorkerState, get_current_worker

from lminspect.fsutil import human_bytes
from lminspect.tui import backend, plotting
from lminspect.tui.messages import GroupDone, GroupProgress, StatsProgress, TensorComputed
from lminspect.tui.stats_text import (
    cell,
    fill_table,
    group_progress_line,
    histogram_of,
    progress_line,
    relative_name,
    scalar_stats,
    singular_values_of,
)
from lminspect.tui.widgets.compare import DiffPanel
from lminspect.tui.widgets.plot import PlotView
from lminspect.weights.provenance import dtype_label

_HEAD_RE = re.compile(r"(?:^|\.)attn\.([qkvo])(?:\.weight)?$")

# rows x cols of the in-memory heatmap; the figure rebins it to the widget's size
HEATMAP_BLOCKS = (64, 192)

# how often the "computing statistics ... N s" line ticks
PROGRESS_TICK_SECONDS = 0.2

# a group overview repaints its table and plot at most this often while statistics arrive
GROUP_REPAINT_SECONDS = 0.5

# the statistics the layers overview offers (its Select), the first is the default
BY_LAYER_STATS = ("alpha", "stable_rank", "effective_rank", "spectral_norm", "std", "kurtosis", "absmax",
                  "frac_near_zero")

# columns of a layer's (or a part's) table of tensors: (statistic, column label)
GROUP_COLUMNS = (("mean", "mean"), ("std", "std"), ("absmax", "absmax"), ("kurtosis", "kurt"),
                 ("frac_near_zero", "~0"), ("stable_rank", "stable r"), ("effective_rank", "eff r"),
                 ("alpha", "alpha"))


















class TensorView(VerticalScroll):
    """Header, statistics table and figures of one tensor; with the ``-group`` class, the
    overview of a group node (statistic Select, table, per-layer plot) instead."""

    DEFAULT_CSS = """
    TensorView { width: 1fr; padding: 0 1; }
    TensorView #tensor-header { height: auto; text-style: bold; }
    TensorView #tensor-status { height: auto; color: $text-muted; }
    TensorView DataTable { height: auto; max-height: 16; margin: 1 0; }
    TensorView PlotView { margin-bottom: 1; }
    TensorView PlotView.tall { height: 22; }
    TensorView PlotView.short { height: 14; }
    TensorView PlotView.-message { height: auto; }
    TensorView #group-view { height: auto; display: none; }
    TensorView.-group #group-view { display: block; }
    TensorView.-group #stats-table, TensorView.-group .tensor-plot, TensorView.-group #diff-panel { display: none; }
    TensorView #group-stat { width: 32; margin-top: 1; }
    TensorView #group-plot { max-height: 75vh; }  /* scrolled to, it fits an 80x24 terminal */
    """

    def compose(self) -> ComposeResult:
        yield Static("Select a tensor in the tree (arrows + Enter, or click).", id="tensor-header", markup=False)
        yield Static("", id="tensor-status", markup=False)
        table: DataTable = DataTable(id="stats-table", cursor_type="row", zebra_stripes=True)
        table.add_columns("statistic", "value")
        yield table
        yield DiffPanel(id="diff-panel")  # shown once a second model is chosen (``c``)
        yield PlotView("", id="plot-hist", classes="short tensor-plot")
        yield PlotView("", id="plot-heatmap", classes="tall tensor-plot")
        yield PlotView("", id="plot-spectrum", classes="short tensor-plot")
        yield PlotView("", id="plot-heads", classes="short")  # shown or hidden per tensor (inline)
        with Vertical(id="group-view"):
            yield Select[str]([(s, s) for s in BY_LAYER_STATS], value=BY_LAYER_STATS[0], allow_blank=False,
                              id="group-stat", compact=True, tooltip="the statistic per layer")
            yield DataTable(id="group-table", cursor_type="row", zebra_stripes=True)
            yield PlotView("", id="group-plot", classes="tall")


class _Group:
    """The selected group node's overview: its tensors, the statistics so far, repaint state."""

    def __init__(self, job: int, path: tuple[str, ...], names: list[str]) -> None:
        self.job = job
        self.path = path
        self.names = names
        self.layers = path == ("layers",)  # the per-layer overview (else a table of tensors)
        self.results: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, str] = {}
        self.index = 0  # the tensor being computed (1-based), for the status line
        self.name = ""
        self.done = False
        self.dirty = False
        self.painted = 0.0


class WeightsPane(Widget):
    """Tree + TensorView; owns the stats workers and the in-memory result caches."""

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
        self._store_job = 0
        # group overviews: statistics by tensor name (from either worker), the selected group,
        # its worker, the statistic of the layers overview and what its table shows (for tests)
        self.stats_cache: dict[str, dict[str, Any]] = {}
        self.group: _Group | None = None
        self._group_worker: Worker | None = None
        self._heads_display = False
        self.stat = BY_LAYER_STATS[0]
        self.overview: tuple[list[int], dict[str, list[float | None]]] | None = None

    def compose(self) -> ComposeResult:
        tree: Tree[str] = Tree("no model", id="weights-tree")
        tree.show_root = True
        yield tree
        yield TensorView(id="tensor-view")

    # -- filling the tree ------------------------------------------------------

    def set_store(self, store: Any, label: str | None = None) -> None:
        self._stop_progress()
        self._job += 1  # whatever still computes for the old model is stale
        self._store_job = self._job  # a later job is this model's
        self._cancel_workers()
        self._leave_group()
        self.store = store
        self.query_one(DiffPanel).show(store, None)
        self.cache.clear()
        self.stats_cache.clear()
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
        node = event.node
        if node.data:
            self.show_tensor(node.data)
        elif node.parent is not None:  # a group (the root, the model itself, does nothing)
            names = self._leaves(node)
            if names:
                self.show_group(self._node_path(node), names)

    def show_tensor(self, name: str) -> None:
        """Paint the header now; statistics from the cache or a worker."""
        if self.store is None:
            return
        self.timings = {"selected": time.perf_counter()}
        self._stop_progress()
        self._job += 1
        if self.group is not None:
            self._cancel_workers(tensor=False)
            self._leave_group()
        self.current = name
        self.query_one(DiffPanel).show(self.store, name)
        info = self.store.info(name)
        shape = " x ".join(str(s) for s in info.shape) or "scalar"
        stored = f"\nstored as {info.name}" if info.name != name else ""
        numel = int(np.prod(info.shape)) if len(info.shape) else 1
        self.query_one("#tensor-header", Static).update(
            f"{name}\nshape {shape}   dtype {dtype_label(self.store, name)}   {numel:,} values   "
            f"{human_bytes(info.nbytes)} on disk{stored}"
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

    # -- selecting a group: the overview ------------------------------------------------

    @staticmethod
    def _node_path(node: TreeNode[str]) -> tuple[str, ...]:
        """``("layers", "3", "attn")``: the labels from under the root down to ``node``."""
        parts = []
        while node.parent is not None:
            parts.append(str(node.label))
            node = node.parent
        return tuple(reversed(parts))

    @classmethod
    def _leaves(cls, node: TreeNode[str]) -> list[str]:
        """The tensors under ``node``, in tree order (layer by layer)."""
        out: list[str] = []
        for child in node.children:
            if child.data:
                out.append(child.data)
            else:
                out.extend(cls._leaves(child))
        return out

    def show_group(self, path: tuple[str, ...], names: list[str]) -> None:
        """The overview of a group node: statistics from memory now, the rest from a worker."""
        if self.store is None:
            return
        self.timings = {"selected": time.perf_counter()}
        self._stop_progress()
        self._job += 1
        self._cancel_workers()
        self.current = None
        group = _Group(self._job, tuple(path), list(names))
        self.group = group
        self.overview = None
        view = self.query_one("#tensor-view", TensorView)
        if not view.has_class("-group"):
            heads = self.query_one("#plot-heads", PlotView)
            self._heads_display = heads.display  # set per tensor, inline: restored on leaving
            heads.display = False
            view.add_class("-group")
        where = "/".join(path)
        if group.layers:
            n_layers = len({n.split(".")[1] for n in names if n.startswith("layers.") and n.count(".") > 1})
            what = (f"{where}: {len(names)} tensors in {n_layers} layers\n"
                    "one statistic by layer and component")
        else:
            what = f"{where}: {len(names)} tensors\nstatistics of each tensor"
        self.query_one("#tensor-header", Static).update(what)
        self.query_one("#tensor-status", Static).update("")
        self.query_one("#group-stat", Select).display = group.layers
        self.query_one("#group-plot", PlotView).display = group.layers
        self.query_one("#group-table", DataTable).clear(columns=True)
        for name in names:
            known = self.stats_cache.get(name)
            if known is None and name in self.cache:
                known = self.cache[name].get("stats") or None
            if known is not None:
                group.results[name] = known
        self.call_after_refresh(self._mark, "painted")
        todo = [(k, n) for k, n in enumerate(names, 1) if n not in group.results]
        self._paint_group()
        if not todo:
            self._finish_group(group)
            return
        group.index, group.name = todo[0]
        self._start_progress()
        # start the worker after this paint, as for a tensor
        self.call_after_refresh(self._start_group, todo, len(names), group.job)

    def _start_group(self, todo: list[tuple[int, str]], total: int, job: int) -> None:
        if job != self._job:
            return  # something else was selected before the worker started
        self._group_worker = self._compute_group(todo, total, job)

    @work(thread=True, exclusive=True, exit_on_error=False, group="group-stats")
    def _compute_group(self, todo: list[tuple[int, str]], total: int, job: int) -> None:
        """``store.stats`` of each tensor in ``todo`` (``(index, name)``), one at a time; stops
        between tensors once cancelled."""
        worker = get_current_worker()
        store = self.store

        def post(message: GroupProgress | GroupDone) -> None:
            try:
                self.post_message(message)
            except RuntimeError:  # the app is shutting down
                pass

        for index, name in todo:
            if worker.is_cancelled:
                return
            post(GroupProgress(job, index, total, name))
            try:
                stats, error = dict(store.stats(name)), ""
            except Exception as exc:  # one bad tensor does not end the overview
                stats, error = {}, backend.user_message(exc)
            # posted even when cancelled meanwhile: the statistics are kept in memory for later
            post(GroupProgress(job, index, total, name, stats, error))
        if not worker.is_cancelled:
            post(GroupDone(job))

    def on_group_progress(self, message: GroupProgress) -> None:
        message.stop()
        if message.stats and message.job > self._store_job:  # this model's: worth keeping
            self.stats_cache[message.name] = message.stats
        group = self.group
        if group is None or message.job != group.job or message.job != self._job:
            return  # a superseded selection's worker
        if message.stats is None:  # starting the next tensor
            group.index, group.name = message.index, message.name
            self._tick()
            return
        if message.stats:
            group.results[message.name] = message.stats
        else:
            group.errors[message.name] = message.error or "no statistics"
        group.dirty = True
        if time.perf_counter() - group.painted >= GROUP_REPAINT_SECONDS:
            self._paint_group()

    def on_group_done(self, message: GroupDone) -> None:
        message.stop()
        group = self.group
        if group is not None and message.job == group.job == self._job:
            self._finish_group(group)

    def _finish_group(self, group: _Group) -> None:
        self._stop_progress()
        self._group_worker = None
        group.done = True
        self._paint_group()
        status = ""
        if group.errors:
            name, error = next(iter(group.errors.items()))
            status = f"statistics failed for {len(group.errors)} of {len(group.names)} tensors ({name}: {error})"
        self.query_one("#tensor-status", Static).update(status)
        self.call_after_refresh(self._mark, "overview")

    def _paint_group(self) -> None:
        """The overview's table (and plot) from the statistics so far."""
        group = self.group
        if group is None:
            return
        group.dirty = False
        group.painted = time.perf_counter()
        table = self.query_one("#group-table", DataTable)
        if group.layers:
            self._paint_layers(group, table)
            return
        rows = []
        for name in group.names:
            r = group.results.get(name)
            try:
                shape = "x".join(str(x) for x in self.store.info(name).shape) or "scalar"
            except Exception:
                shape = "?"
            if r is not None:
                values = [cell(r.get(key)) for key, _ in GROUP_COLUMNS]
            else:
                values = ["-" if name in group.errors else "…"] * len(GROUP_COLUMNS)
            rows.append((name, [relative_name(name, group.path), shape, *values]))
        fill_table(table, ["tensor", "shape", *(label for _, label in GROUP_COLUMNS)], rows)

    def _paint_layers(self, group: _Group, table: DataTable) -> None:
        from lminspect.errors import UserError
        from lminspect.weights.stats import by_layer

        plot = self.query_one("#group-plot", PlotView)
        stat = self.stat
        results = [group.results[n] for n in group.names if n in group.results]
        try:
            layers, cols = by_layer(results, stat)
        except UserError as exc:
            self.overview = None
            fill_table(table, ["layer"], [])
            why = backend.user_message(exc).removeprefix("--by-layer ") if group.done else "waiting for statistics"
            plot.show_message(f"{stat} by layer: {why}")
            return
        self.overview = (layers, cols)
        pending = set() if group.done else set(group.names) - set(group.results) - set(group.errors)

        def shown(layer: int, component: str, value: float | None) -> str:
            if value is None and f"layers.{layer}.{component}.weight" in pending:
                return "…"
            return cell(value)

        rows = [(str(i), [str(i), *(shown(i, c, v[k]) for c, v in cols.items())]) for k, i in enumerate(layers)]
        fill_table(table, ["layer", *cols], rows)
        plot.show_figure(lambda w, h: plotting.by_layer_figure(layers, cols, stat, w, h))

    @on(Select.Changed, "#group-stat")
    def _stat_changed(self, event: Select.Changed) -> None:
        value = event.value
        if value is Select.NULL or value == self.stat:
            return
        self.stat = str(value)
        if self.group is not None and self.group.layers:
            self._paint_group()

    def _leave_group(self) -> None:
        """Back to the tensor view (the caller has cancelled the overview's worker)."""
        self.group = None
        self.overview = None
        view = self.query_one("#tensor-view", TensorView)
        if view.has_class("-group"):
            view.remove_class("-group")
            self.query_one("#plot-heads", PlotView).display = self._heads_display

    def _cancel_workers(self, *, tensor: bool = True) -> None:
        """Cancel the overview's worker (and the tensor's): each stops at its next check."""
        if self._group_worker is not None:
            self._group_worker.cancel()
            self._group_worker = None
        if tensor and self._stats_worker is not None:
            self._stats_worker.cancel()
            self._stats_worker = None

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
        group = self.group
        if group is not None:
            line = group_progress_line(group.index, len(group.names), group.name, elapsed)
            if group.dirty and time.perf_counter() - group.painted >= GROUP_REPAINT_SECONDS:
                self._paint_group()
        else:
            line = progress_line(self._stage, elapsed)
        self.query_one("#tensor-status", Static).update(line)

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
        self.post_message(TensorComputed(name, result, job))

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
        if message.job <= self._store_job:
            return  # computed for the model open before this one: same names, other tensors
        self.cache[message.name] = message.result
        if message.result.get("stats"):
            self.stats_cache[message.name] = message.result["stats"]
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
        if event.state == WorkerState.ERROR and event.worker.group == "group-stats":
            if event.worker is self._group_worker:
                self._stop_progress()
                self.query_one("#tensor-status", Static).update("statistics failed (see the error)")
            self.app.report_error("Could not compute statistics", event.worker.error)
        if event.state == WorkerState.ERROR and event.worker.group == "tensor-stats":
            if event.worker is self._stats_worker:  # not a superseded selection's worker
                self._stop_progress()
                self.query_one("#tensor-status", Static).update("statistics failed (see the error)")
            self.app.report_error("Could not compute statistics", event.worker.error)




