"""The Runs tab: tick training runs, see a chosen metric, accuracy and diff-vs-baseline curves.

Each run in the list shows its experiment, steps done, last loss and status
(``train.runlog.run_summary``, which reads only the logs' tails). A metric choice (loss,
val_loss, lr, ... whatever the runs logged) and an x-axis choice (tokens, steps, FLOPs)
drive the first and the diff figure.

Runs are read with ``lminspect.train.runlog.load_run`` (in a worker) and drawn
with ``lminspect.plots`` (the same figures as ``lminspect plot``). A timer
watches the selected runs' files; when one changes (a run still training) the
runs are reloaded and the plots redrawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Label, Select, SelectionList, Static
from textual.worker import Worker, WorkerState

from lminspect.tui import backend
from lminspect.tui.messages import RunsLoaded
from lminspect.tui.widgets.plot import PlotView
from lminspect.tui.widgets.ticks import TickList

# half-width of lminspect.plots.smooth's centred triangular window, in logged steps
SMOOTHING = [("none", 0), ("2 steps", 2), ("5 steps", 5), ("10 steps", 10), ("25 steps", 25), ("100 steps", 100)]
POLL_SECONDS = 2.0
X_AXES = [("tokens", "tokens"), ("steps", "steps"), ("FLOPs", "flops"), ("seconds", "time")]
RUN_COLUMNS = "run · experiment · steps · last loss · status"
NOT_METRICS = {"step", "tokens", "time", "flops", "plan_step"}


class RunsPane(Widget):
    DEFAULT_CSS = """
    RunsPane { layout: horizontal; height: 1fr; }
    RunsPane #runs-side { width: 52; max-width: 45%; border-right: solid $primary-darken-2; }
    RunsPane #runs-side > Label { padding: 0 1; text-style: bold; margin-top: 1; }
    RunsPane #runs-list { height: 1fr; min-height: 4; }
    RunsPane #runs-side > Select { margin: 0 1; }
    RunsPane #runs-columns { color: $text-muted; padding: 0 1; }
    RunsPane #runs-plots { width: 1fr; padding: 0 1; }
    RunsPane #runs-status { height: auto; color: $text-muted; }
    RunsPane PlotView { height: 18; margin-bottom: 1; }
    """

    def __init__(self, runs_dir: Path, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.runs_dir = Path(runs_dir)
        self.loaded: dict[str, Any] = {}
        self.mtimes: dict[str, float] = {}
        self.smoothing = 0
        self.metric = "loss"
        self.x = "tokens"
        self._metric_names = ["loss"]
        self._loading = False

    def compose(self) -> ComposeResult:
        with Vertical(id="runs-side"):
            yield Label(f"runs in {_display_path(self.runs_dir)}")
            yield Static(RUN_COLUMNS, id="runs-columns", markup=False)
            yield TickList(id="runs-list")
            yield Label("metric")
            yield Select([("loss", "loss")], value="loss", allow_blank=False, id="metric", compact=True)
            yield Label("x axis")
            yield Select(X_AXES, value="tokens", allow_blank=False, id="x-axis", compact=True)
            yield Label("smoothing")
            yield Select(SMOOTHING, value=0, allow_blank=False, id="smoothing", compact=True)
        with VerticalScroll(id="runs-plots"):
            yield Static("Tick one or more runs on the left (space). The first ticked run is the baseline.",
                         id="runs-status", markup=False)
            yield PlotView("", id="plot-loss")
            yield PlotView("", id="plot-acc")
            yield PlotView("", id="plot-diff")

    def on_mount(self) -> None:
        self.refresh_list()
        self.set_interval(POLL_SECONDS, self._poll)

    def refresh_list(self, select: str | None = None) -> None:
        """Re-scan the runs directory, keeping ticks; ``select`` ticks one more run."""
        sl = self.query_one("#runs-list", SelectionList)
        keep = set(sl.selected)
        if select is not None:
            keep.add(str(Path(select)))
        runs = backend.find_runs(self.runs_dir)
        if select is not None and str(Path(select)) not in {str(r) for r in runs}:
            runs.append(Path(select))
        sl.clear_options()
        for run in runs:
            label = _run_name(run, self.runs_dir)
            sl.add_option((_run_label(label, backend.run_summary(run)), str(run), str(run) in keep))
        if runs and sl.highlighted is None:
            sl.highlighted = 0  # so space ticks the first run straight away
        if not runs:
            self.query_one("#runs-status", Static).update(
                f"No runs under {self.runs_dir} (a run is a directory with stats.jsonl). "
                "Train one with `lminspect train`, or start with --runs DIR."
            )
        elif keep:
            self._load(sorted(keep, key=lambda p: list(sl.selected).index(p) if p in sl.selected else 0))

    def chosen_run(self) -> str | None:
        """The first ticked run, else the highlighted one (for the timeline)."""
        sl = self.query_one("#runs-list", SelectionList)
        if sl.selected:
            return str(sl.selected[0])
        if sl.highlighted is not None and sl.option_count:
            return str(sl.get_option_at_index(sl.highlighted).value)
        return None

    def select_run(self, path: str) -> None:
        self.refresh_list(select=path)

    @on(SelectionList.SelectedChanged, "#runs-list")
    def _selection_changed(self) -> None:
        selected = list(self.query_one("#runs-list", SelectionList).selected)
        if not selected:
            self.loaded = {}
            self._draw()
            return
        self._load(selected)

    @on(Select.Changed, "#metric")
    def _metric_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and event.value != self.metric:
            self.metric = event.value
            self._draw()

    @on(Select.Changed, "#x-axis")
    def _x_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and event.value != self.x:
            self.x = event.value
            self._draw()

    def _offer_metrics(self) -> None:
        """The metric choice lists what the ticked runs logged (loss first, then acc, val_*...)."""
        have: list[str] = []
        for r in self.loaded.values():
            have += [k for k in r.columns if k not in NOT_METRICS and k not in have]
        order = ["loss", "acc", "val_loss", "val_acc", "lr", "grad_norm", "tok_s"]
        names = [m for m in order if m in have] + [m for m in have if m not in order]
        sel = self.query_one("#metric", Select)
        if names and names != self._metric_names:
            self._metric_names = names
            with sel.prevent(Select.Changed):
                sel.set_options([(m, m) for m in names])
                sel.value = self.metric if self.metric in names else names[0]
            self.metric = sel.value

    @on(Select.Changed, "#smoothing")
    def _smoothing_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, int):
            self.smoothing = event.value
            self._draw()

    def _poll(self) -> None:
        """Reload when a selected run's files changed since we read them (a run still training)."""
        selected = list(self.query_one("#runs-list", SelectionList).selected)
        if not selected or self._loading:  # never cancel a load that is still reading (slow first import)
            return
        changed = any(backend.run_mtime(Path(p)) != self.mtimes.get(p) for p in selected)
        if changed:
            self._load(selected)

    def _load(self, paths: list[str]) -> None:
        self._loading = True
        self._load_worker(paths)

    @work(thread=True, exclusive=True, exit_on_error=False, group="runs")
    def _load_worker(self, paths: list[str]) -> None:
        runs: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for p in paths:
            self.mtimes[p] = backend.run_mtime(Path(p))
            try:
                runs[p] = backend.load_run(p)
            except Exception as exc:  # one bad run must not hide the others
                errors[p] = backend.user_message(exc)
        self.post_message(RunsLoaded(runs, errors))

    def on_runs_loaded(self, message: RunsLoaded) -> None:
        self._loading = False
        self.loaded = message.runs
        self._offer_metrics()
        if message.errors:
            for path, err in message.errors.items():
                self.app.notify(f"{Path(path).name}: {err}", severity="error", timeout=8, markup=False)
        self._draw()

    def _draw(self) -> None:
        status = self.query_one("#runs-status", Static)
        views = [self.query_one(i, PlotView) for i in ("#plot-loss", "#plot-acc", "#plot-diff")]
        if not self.loaded:
            status.update("Tick one or more runs on the left (space). The first ticked run is the baseline.")
            for v in views:
                v.show_message("")
            return
        plots = backend.plots_module()
        runs = list(self.loaded.values())
        parts = []
        for r in runs:
            state = getattr(r, "status", "")
            parts.append(f"{getattr(r, 'name', '?')} ({len(r)} steps{', ' + state if state else ''})")
        status.update(f"{', '.join(parts)}; baseline {runs[0].name}; smoothing {self.smoothing}")
        smooth, metric, x = self.smoothing, self.metric, self.x
        views[0].show_figure(lambda w, h: _figure(plots, metric, runs, smooth, w, h, x=x),
                             save=_saver(plots, metric, runs, smooth, x), name=metric)
        views[1].show_figure(lambda w, h: _figure(plots, "acc", runs, smooth, w, h, x=x),
                             save=_saver(plots, "acc", runs, smooth, x), name="acc")
        if len(runs) > 1:
            views[2].show_figure(lambda w, h: _figure(plots, metric, runs, smooth, w, h, x=x, diff=True),
                                 save=_saver(plots, metric, runs, smooth, x, diff=True), name=f"{metric}_diff")
        else:
            views[2].show_message("diff vs baseline: tick a second run (the first ticked is the baseline)")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "runs" and event.state in (WorkerState.ERROR, WorkerState.CANCELLED):
            self._loading = False
        if event.worker.group == "runs" and event.state == WorkerState.ERROR:
            self.app.report_error("Could not read the runs", event.worker.error)


def _display_path(path: Path) -> str:
    """Relative to the working directory when inside it (short, and stable for snapshots)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)


def _run_name(run: Path, runs_dir: Path) -> str:
    """``gpt2ish``, ``cmp/gpt2ish`` one level down (a batch's folder says which batch), else the path."""
    try:
        return str(run.relative_to(runs_dir)) if run != runs_dir else run.name
    except ValueError:
        return _display_path(run)


def _run_label(label: str, s: dict[str, Any]) -> str:
    """One line per run (a selection shows one line) under the RUN_COLUMNS header."""
    loss = f"{s['loss']:.3g}" if isinstance(s.get("loss"), int | float) else "-"
    return f"{label} · {s['exp']} · {s['steps']} · {loss} · {s['status']}"


def _saver(plots: Any, metric: str, runs: list[Any], smooth: int, x: str, diff: bool = False) -> Any:
    """Save the same lines, title and axes as the terminal figure (lminspect.figures)."""

    def save(path: Path) -> Path:
        from lminspect.figures import save_lines

        d = plots.curve_data(runs, metric, x=x, diff=diff, baseline=runs[0] if diff else None, smooth_n=smooth)
        return save_lines(path, d.series, title=d.title, xlabel=d.xlabel, ylabel=d.ylabel)

    return save


def _figure(plots: Any, metric: str, runs: list[Any], smooth: int, width: int, height: int, *,
            x: str = "tokens", diff: bool = False) -> str:
    """One figure from ``lminspect.plots.plot_runs`` (the library owns the drawing)."""
    from lminspect.tui.plotting import PLOT_LOCK

    with PLOT_LOCK:
        try:
            return plots.plot_runs(runs, metric, diff=diff, baseline=runs[0] if diff else None, x=x,
                                   smooth_n=smooth, width=width, height=height, marks=True)
        except Exception as exc:  # e.g. a run with no accuracy column: say so in place of the figure
            return f"{metric}: {backend.user_message(exc)}"
