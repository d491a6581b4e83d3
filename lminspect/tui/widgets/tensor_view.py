"""The Weights tab's right side for one tensor: the view (:class:`TensorView`: header, statistics
table, figures; the group overview's widgets hidden until a group is selected) and the work behind
it (:class:`TensorDetail`: statistics, heatmap and per-head norms in an exclusive thread worker,
then painted). :class:`~lminspect.tui.widgets.weights.WeightsPane` mixes it in.
"""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import DataTable, Select, Static
from textual.worker import get_current_worker

from lminspect.tui import backend, plotting
from lminspect.tui.messages import StatsProgress, TensorComputed
from lminspect.tui.stats_text import (
    histogram_of,
    scalar_stats,
    singular_values_of,
)
from lminspect.tui.widgets.compare import DiffPanel
from lminspect.tui.widgets.plot import PlotView
from lminspect.tui.widgets.weight_groups import BY_LAYER_STATS

_HEAD_RE = re.compile(r"(?:^|\.)attn\.([qkvo])(?:\.weight)?$")

# rows x cols of the in-memory heatmap; the figure rebins it to the widget's size
HEATMAP_BLOCKS = (64, 192)


class TensorView(VerticalScroll):
    """Header, statistics table and figures of one tensor; with the ``-group`` class, the
    overview of a group node (statistic Select, table, per-layer plot) instead."""

    DEFAULT_CSS = """
    TensorView { width: 1fr; padding: 0 1; }
    TensorView #tensor-header { height: auto; text-style: bold; }
    TensorView #tensor-status { height: auto; color: $text-muted; }
    /* tables grow with their rows, the view scrolls: a table scrolling inside it showed its
       scrollbar's ends as stray blocks mid-pane (80x24 caps them in app.tcss) */
    TensorView DataTable { height: auto; margin: 1 0; }
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


class TensorDetail(Widget):
    """Computing and painting one tensor's statistics and figures (state lives in ``WeightsPane``)."""

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
            hist_view.show_figure(lambda w, h: plotting.histogram_figure(counts, edges, w, h),
                                  save=_hist_saver(name, counts, edges), name=f"{name}_hist")
        else:
            hist_view.show_message("histogram: not in the statistics")
        heat_view = self.query_one("#plot-heatmap", PlotView)
        blocks = result.get("heatmap")
        if blocks is not None:
            shape = tuple(info.shape)
            mono = self.app.no_color  # NO_COLOR: shades, since colours would not show
            heat_view.show_figure(lambda w, h: plotting.heatmap_figure(blocks, shape, w, h, mono=mono),
                                  save=_heatmap_saver(name, blocks, shape), name=f"{name}_heatmap")
        else:
            heat_view.show_message("heatmap: scalar tensor")
        sv_view = self.query_one("#plot-spectrum", PlotView)
        sv = singular_values_of(stats)
        if sv:
            sv_view.show_figure(lambda w, h: plotting.spectrum_figure(sv, w, h),
                                save=_spectrum_saver(name, sv), name=f"{name}_spectrum")
        else:
            sv_view.show_message("singular values: only for matrices" if len(info.shape) < 2 else "singular values: not computed")
        heads_view = self.query_one("#plot-heads", PlotView)
        heads = result.get("heads")
        if heads:
            which, norms = heads
            heads_view.display = True
            heads_view.show_figure(lambda w, h: plotting.heads_figure(norms, w, h, title=f"per-head norm ({which} projection)"),
                                   name=f"{name}_heads")  # bars: saved as text
        else:
            heads_view.display = False
        self._mark("figures")


# savers for the save key (ctrl+s): the data each terminal figure draws, through lminspect.figures


def _hist_saver(name: str, counts: Any, edges: Any) -> Any:
    def save(path: Any) -> Any:
        from lminspect.figures import save_histograms

        return save_histograms(path, {name: (list(edges), list(counts))}, title=f"{name}: histogram", xlabel="value")

    return save


def _spectrum_saver(name: str, sv: Any) -> Any:
    def save(path: Any) -> Any:
        from lminspect.figures import save_lines

        ranks = list(range(1, len(sv) + 1))
        return save_lines(path, {name: (ranks, list(sv))}, title=f"{name}: singular values", xlabel="rank",
                          ylabel="singular value", ylog=True)

    return save


def _heatmap_saver(name: str, blocks: Any, shape: tuple[int, ...]) -> Any:
    def save(path: Any) -> Any:
        from lminspect.figures import save_heatmap

        dims = " x ".join(str(s) for s in shape)
        return save_heatmap(path, blocks, title=f"{name} ({dims}): mean |W| per block",
                            xlabel=f"column block ({blocks.shape[1]})", ylabel=f"row block ({blocks.shape[0]})")

    return save
