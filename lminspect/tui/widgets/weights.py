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

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.timer import Timer
from textual.widgets import DataTable, Static, Tree
from textual.widgets.tree import TreeNode
from textual.worker import Worker, WorkerState

from lminspect.fsutil import human_bytes
from lminspect.tui.messages import StatsProgress
from lminspect.tui.stats_text import (
    group_progress_line,
    progress_line,
)
from lminspect.tui.widgets.compare import DiffPanel
from lminspect.tui.widgets.plot import PlotView
from lminspect.tui.widgets.tensor_view import TensorDetail, TensorView
from lminspect.tui.widgets.weight_groups import (
    BY_LAYER_STATS,
    GROUP_REPAINT_SECONDS,
    GroupOverview,
    GroupState,
)
from lminspect.weights.provenance import dtype_label

# how often the "computing statistics ... N s" line ticks
PROGRESS_TICK_SECONDS = 0.2


class WeightsPane(GroupOverview, TensorDetail):
    """Tree + TensorView; owns the stats workers and the in-memory result caches.

    The tensor view's computing and painting is :class:`TensorDetail` (``tensor_view.py``), the
    group overview :class:`GroupOverview` (``weight_groups.py``); this class holds the tree, the
    shared state, the selection and the progress line.
    """

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
        self.group: GroupState | None = None
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
        # Text, not a string: a string label is markup, and "[llama]" would vanish as a tag
        tree.root.set_label(Text(f"{label} [{getattr(store, 'arch', '?')}]"))
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

    def reveal(self, name: str) -> None:
        """Put the tree's cursor on ``name``'s leaf, its groups expanded and scrolled into view (a
        tensor chosen elsewhere, in the command palette, shows where it sits)."""
        tree = self.query_one("#weights-tree", Tree)
        if tree.cursor_node is not None and tree.cursor_node.data == name:
            return
        stack = list(tree.root.children)
        while stack:
            node = stack.pop()
            if node.data == name:
                parent = node.parent
                while parent is not None:
                    parent.expand()
                    parent = parent.parent
                # the cursor moves once the expanded groups are laid out (line numbers change)
                self.call_after_refresh(self._cursor_to, node)
                return
            stack.extend(node.children)

    def _cursor_to(self, node: TreeNode[str]) -> None:
        tree = self.query_one("#weights-tree", Tree)
        tree.move_cursor(node)
        tree.scroll_to_node(node, animate=False)

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
