"""A run's timeline (``t`` in the Runs tab, or the palette): one weight statistic per component
across its checkpoints, and the token embeddings of every checkpoint in one PCA plane. The
numbers are ``lminspect timeline``'s, computed in workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Select, Static
from textual.worker import Worker, WorkerState

from lminspect.tui import backend
from lminspect.tui.plotting import PLOT_LOCK
from lminspect.tui.widgets.plot import PlotView

STATS = ("std", "rms", "kurtosis", "absmax", "stable_rank", "alpha", "spectral_norm")


class TimelineReady(Message):
    def __init__(self, stat: str, steps: list[int], tokens: list[Any], cols: dict[str, list[Any]]) -> None:
        super().__init__()
        self.stat, self.steps, self.tokens, self.cols = stat, steps, tokens, cols


class TimelineScreen(Screen[None]):
    """Statistic select, a step x component table (mean over layers) and its plot."""

    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back", id="timeline.back")]

    DEFAULT_CSS = """
    TimelineScreen VerticalScroll { padding: 0 1; }
    TimelineScreen #timeline-title { text-style: bold; height: auto; }
    TimelineScreen #timeline-stat { width: 32; margin: 1 0; }
    TimelineScreen DataTable { height: auto; margin-bottom: 1; }  /* the screen scrolls, not the table */
    TimelineScreen PlotView { height: 20; margin-bottom: 1; }
    TimelineScreen #timeline-embeddings { height: 26; }
    """

    def __init__(self, run_dir: str | Path, stat: str = "std") -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.stat = stat
        self.data: TimelineReady | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(f"timeline of {self.run_dir.name}: mean over layers, per checkpoint", id="timeline-title",
                         markup=False)
            yield Select([(s, s) for s in STATS], value=self.stat, allow_blank=False, id="timeline-stat",
                         compact=True)
            yield Static("", id="timeline-status", markup=False)
            yield DataTable(id="timeline-table", zebra_stripes=True)
            yield PlotView("", id="timeline-plot")
            yield PlotView("token embeddings: computing the PCA ...", id="timeline-embeddings")
        yield Footer()

    def on_mount(self) -> None:
        self._load(self.stat)
        self._embeddings()

    @work(thread=True, exit_on_error=False, group="timeline-embeddings")
    def _embeddings(self) -> None:
        pca, labelled = backend.embedding_pca(self.run_dir)
        self.app.call_from_thread(self._show_embeddings, pca, labelled)

    def _show_embeddings(self, pca: Any, labelled: list[tuple[str, int]]) -> None:
        def figure(w: int, h: int) -> str:
            with PLOT_LOCK:
                return backend.embedding_figure(pca, labelled, w, h)

        self.query_one("#timeline-embeddings", PlotView).show_figure(figure)

    @on(Select.Changed, "#timeline-stat")
    def _stat_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and event.value != self.stat:
            self.stat = event.value
            self._load(event.value)

    def _load(self, stat: str) -> None:
        self.query_one("#timeline-status", Static).update(f"computing {stat} for every checkpoint ...")
        self._compute(stat)

    @work(thread=True, exclusive=True, exit_on_error=False, group="timeline")
    def _compute(self, stat: str) -> None:
        steps, tokens, cols = backend.timeline(self.run_dir, stat)
        self.post_message(TimelineReady(stat, steps, tokens, cols))

    def on_timeline_ready(self, message: TimelineReady) -> None:
        if message.stat != self.stat:
            return  # a statistic chosen before this one finished
        self.data = message
        table = self.query_one("#timeline-table", DataTable)
        table.clear(columns=True)
        table.add_columns("step", "tokens", *message.cols)
        for k, s in enumerate(message.steps):
            tok = message.tokens[k]
            table.add_row(str(s), "-" if tok is None else f"{tok:,}",
                          *("-" if v[k] is None else f"{v[k]:.4g}" for v in message.cols.values()))
        self.query_one("#timeline-status", Static).update(
            f"{len(message.steps)} checkpoints, steps {message.steps[0]}-{message.steps[-1]}")
        plot = self.query_one("#timeline-plot", PlotView)
        if len(message.steps) < 2:
            plot.show_message("one checkpoint: train with --keep-checkpoints 0 to keep them all")
            return

        def figure(w: int, h: int) -> str:
            with PLOT_LOCK:
                return backend.timeline_figure(message.steps, message.cols, message.stat, w, h)

        plot.show_figure(figure)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "timeline-embeddings" and event.state == WorkerState.ERROR:
            self.query_one("#timeline-embeddings", PlotView).show_message(
                f"token embeddings: {backend.user_message(event.worker.error)}")
        if event.worker.group == "timeline" and event.state == WorkerState.ERROR:
            self.query_one("#timeline-status", Static).update("failed (see the error)")
            self.app.report_error("Could not build the timeline", event.worker.error)
