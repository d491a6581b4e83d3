"""The Weights tab's group overview: selecting a group node (``layers``, ``layers/3``,
``layers/3/attn``) shows one statistic by layer and component, or a table of the group's tensors,
filled in as an exclusive thread worker computes the missing statistics one tensor at a time.
:class:`~lminspect.tui.widgets.weights.WeightsPane` mixes :class:`GroupOverview` in.
"""

from __future__ import annotations

import time
from typing import Any

from textual import on, work
from textual.widget import Widget
from textual.widgets import DataTable, Select, Static
from textual.widgets.tree import TreeNode
from textual.worker import get_current_worker

from lminspect.tui import backend, plotting
from lminspect.tui.messages import GroupDone, GroupProgress
from lminspect.tui.stats_text import (
    cell,
    fill_table,
    relative_name,
)
from lminspect.tui.widgets.plot import PlotView

# a group overview repaints its table and plot at most this often while statistics arrive
GROUP_REPAINT_SECONDS = 0.5

# the statistics the layers overview offers (its Select), the first is the default
BY_LAYER_STATS = ("alpha", "stable_rank", "effective_rank", "spectral_norm", "std", "kurtosis", "absmax",
                  "frac_near_zero")

# columns of a layer's (or a part's) table of tensors: (statistic, column label)
# the statistics' own names, the column headers of ``lminspect stats`` and ``m.stats()``
GROUP_COLUMNS = tuple((k, k) for k in ("mean", "std", "absmax", "kurtosis", "frac_near_zero", "stable_rank",
                                        "effective_rank", "alpha"))


class GroupState:
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


class GroupOverview(Widget):
    """Selecting, computing and painting a group node's overview (state lives in ``WeightsPane``)."""

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
        group = GroupState(self._job, tuple(path), list(names))
        self.group = group
        self.overview = None
        view = self.query_one("#tensor-view")
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

    def _finish_group(self, group: GroupState) -> None:
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

    def _paint_layers(self, group: GroupState, table: DataTable) -> None:
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
        plot.show_figure(lambda w, h: plotting.by_layer_figure(layers, cols, stat, w, h),
                         save=_by_layer_saver(layers, cols, stat), name=f"{stat}_by_layer")

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
        view = self.query_one("#tensor-view")
        if view.has_class("-group"):
            view.remove_class("-group")
            self.query_one("#plot-heads", PlotView).display = self._heads_display


def _by_layer_saver(layers: Any, cols: Any, stat: str) -> Any:
    """Save the layers overview as PNG/SVG: the same lines as ``stats --by-layer --save``."""

    def save(path: Any) -> Any:
        from lminspect.figures import save_lines
        from lminspect.plots import by_layer_data

        d = by_layer_data(layers, cols, stat)
        return save_lines(path, d.series, title=d.title, xlabel=d.xlabel, ylabel=stat)

    return save
