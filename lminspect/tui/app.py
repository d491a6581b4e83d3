"""``lminspect tui``: the Textual app (Weights, Stitch, Runs and Activations tabs).

Start-up only builds widgets; opening the model (reading headers), statistics,
model loading, generation, run loading and activation statistics all happen in thread workers, so the
first screen shows at once and the UI thread never blocks for long. Worker
errors become an error modal (``report_error``), never a crash.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Footer, Header, Input, TabbedContent, TabPane, TextArea
from textual.worker import Worker, WorkerState

from lminspect.tui import backend
from lminspect.tui.commands import LMInspectCommands, TensorAndPlanCommands
from lminspect.tui.messages import StoreOpened
from lminspect.tui.screens.error import ErrorScreen
from lminspect.tui.screens.help import HelpScreen
from lminspect.tui.screens.picker import Choice, PickerScreen
from lminspect.tui.screens.timeline import TimelineScreen
from lminspect.tui.widgets.activations import ActsPane
from lminspect.tui.widgets.compare import DiffPanel
from lminspect.tui.widgets.runs import RunsPane
from lminspect.tui.widgets.stitch import StitchPane
from lminspect.tui.widgets.weights import WeightsPane
from lminspect.weights.provenance import model_dtype_label, source_quantization


class LMInspectApp(App[None]):
    """The workbench. ``model`` is anything ``open_store`` accepts; ``runs_dir`` holds runs;
    ``acts`` are activation results directories (or folders of them) for the Activations tab."""

    CSS_PATH = "app.tcss"
    # the screen gets class -short below 30 rows (80x24 is the smallest supported size)
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-tall")]
    TITLE = "lminspect"
    COMMANDS = App.COMMANDS | {LMInspectCommands, TensorAndPlanCommands}

    BINDINGS = [
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("f1,question_mark", "help", "Help", id="app.help", key_display="F1"),
        Binding("o", "open_model", "Open", id="app.open", tooltip="Open a model or a run"),
        Binding("w", "show_tab('weights')", "Weights", id="app.weights"),
        Binding("s", "show_tab('stitch')", "Stitch", id="app.stitch"),
        Binding("r", "show_tab('runs')", "Runs", id="app.runs"),
        Binding("a", "show_tab('acts')", "Activations", id="app.acts"),
        Binding("ctrl+t", "toggle_theme", "Theme", id="app.theme", tooltip="Dark / light"),
        Binding("escape", "leave_field", "Leave field", show=False, id="app.leave"),
        Binding("ctrl+s", "save_figure", "Save figure", id="app.save", show=False,
                tooltip="Save the tab's figure as PNG or SVG"),
        Binding("c", "compare", "Compare", id="app.compare", show=False,
                tooltip="Weights tab: each tensor's difference to a second model, checkpoint or run"),
        Binding("t", "timeline", "Timeline", id="app.timeline", show=False,
                tooltip="A statistic across the checkpoints of the run ticked in the Runs tab"),
    ]
    # letter keys that a text field would take as typing: hidden (and off) while one has focus,
    # so the footer never offers a key that would type into the field instead
    LETTER_ACTIONS = frozenset({"quit", "open_model", "show_tab", "compare", "timeline"})

    def __init__(self, model: str | None = None, runs_dir: str | Path = "runs", *,
                 acts: Sequence[str | Path] = (), remember: bool = True) -> None:
        super().__init__()
        self.model_ref = model
        self.runs_dir = Path(runs_dir)
        self.acts = [Path(p) for p in acts]
        self.store: Any = None
        self.remember = remember  # tests and benchmarks don't touch recent.json
        self._opening = model or ""  # the reference being opened, and the title of the one open
        self._opened_title = "no model"

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="tabs", initial="weights"):
            with TabPane("Weights", id="weights"):
                yield WeightsPane(id="weights-pane")
            with TabPane("Stitch", id="stitch"):
                yield StitchPane(id="stitch-pane")
            with TabPane("Runs", id="runs"):
                yield RunsPane(self.runs_dir, id="runs-pane")
            # empty until first shown (_acts_pane): building its widgets takes ~45 ms,
            # which would delay the first paint of a selected tensor by as much
            yield TabPane("Activations", id="acts")
        yield Footer()

    def on_mount(self) -> None:
        if self.model_ref:
            self.sub_title = f"opening {self.model_ref}..."
            self.open_model(self.model_ref)
        else:
            self.sub_title = "no model"
            self.call_after_refresh(self.action_open_model)

    # -- opening a model ----------------------------------------------------------

    def open_model(self, ref: str) -> None:
        self._opening = ref  # for the error: model_ref is still the model open before
        self.sub_title = f"opening {ref}..."
        self._open_store(ref)

    @work(thread=True, exclusive=True, exit_on_error=False, group="open")
    def _open_store(self, ref: str) -> None:
        store = backend.open_store(ref)
        self.post_message(StoreOpened(ref, store))

    def on_store_opened(self, message: StoreOpened) -> None:
        self.store = message.store
        self.model_ref = message.ref
        name = backend.model_label(message.ref, message.store)  # "smollm2", not its folder's "hf"
        quant = source_quantization(message.store)  # "F32 (dequantized from Q4_1)" when converted
        weights = f", {model_dtype_label(message.store)}" if quant else ""
        self.sub_title = self._opened_title = (
            f"{name} ({getattr(message.store, 'arch', '?')}, {getattr(message.store, 'format', '?')}{weights})")
        self.query_one(WeightsPane).set_store(message.store, label=name)
        self.query_one(StitchPane).set_store(message.store)
        for pane in self.query(ActsPane):  # none until the tab is first shown
            pane.set_store(message.store)
        if self.remember:
            backend.remember_model(message.ref)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "open-other" and event.state == WorkerState.ERROR:
            self.report_error("Could not open the model to compare with", event.worker.error)
        if event.worker.group == "open" and event.state == WorkerState.ERROR:
            self.sub_title = self._opened_title  # the model still open, if any
            self.report_error(f"Could not open {self._opening}", event.worker.error)

    def report_error(self, title: str, error: BaseException | None) -> None:
        """Show a worker's error in a modal; the app keeps running."""
        message = backend.user_message(error) if error is not None else "unknown error"
        self.log.error(title, error)
        self.push_screen(ErrorScreen(title, message))

    # -- actions ------------------------------------------------------------------

    def _typing(self) -> bool:
        return isinstance(self.focused, Input | TextArea)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.LETTER_ACTIONS and self._typing():
            return False
        return True

    def on_descendant_focus(self) -> None:
        if self.screen_stack:  # none while the app shuts down
            self.refresh_bindings()  # the footer follows: letter keys back when focus leaves a field

    def on_descendant_blur(self) -> None:
        if self.screen_stack:  # widgets blur as the app shuts down, after its screens are gone
            self.refresh_bindings()

    def action_leave_field(self) -> None:
        """Escape in a text field: focus the next thing in the same tab that is not a field."""
        if not self._typing() or isinstance(self.screen, ModalScreen):
            return
        field = self.focused
        pane = next((a for a in field.ancestors if isinstance(a, TabPane)), None)
        scope = pane if pane is not None else self.screen
        others = [w for w in scope.query("*") if w.focusable and not isinstance(w, Input | TextArea)]
        if others:
            others[0].focus()
        else:
            self.set_focus(None)

    def action_open_model(self) -> None:
        self.push_screen(PickerScreen(self.runs_dir), self._picked)

    def _picked(self, choice: Choice) -> None:
        if choice is None:
            return
        kind, value = choice
        if kind == "run":  # its curves ticked in the Runs tab, and its weights opened when it has some
            self.query_one(RunsPane).select_run(value)
            if not backend.has_checkpoints(value):
                self.action_show_tab("runs")
                self.push_screen(ErrorScreen(f"Could not open {value}",
                                             "This run has no checkpoints yet, so no weights to open "
                                             "(train with --save-every). Its curves are ticked in the Runs tab."))
                return
        self.open_model(value)
        self.action_show_tab("weights")

    # the widget that takes focus when a tab is shown (moving focus first also keeps
    # TabbedContent from switching back to the tab that held the old focus)
    TAB_FOCUS = {"weights": "#weights-tree", "stitch": "#plan-input", "runs": "#runs-list", "acts": "#acts-list"}

    async def _show_acts_first_time(self) -> None:
        await self._acts_pane()
        self.action_show_tab("acts")

    async def _acts_pane(self) -> ActsPane:
        """The Activations pane, mounted (with its widgets) the first time it is needed."""
        found = self.query(ActsPane)
        if found:
            return found.first()
        pane = ActsPane(self.acts, id="acts-pane")
        await self.query_one("#acts", TabPane).mount(pane)
        return pane

    def _focus_target(self, tab: str) -> Widget:
        if tab == "acts":  # the path field while there is nothing to tick (mounted by now)
            return self.query_one(ActsPane).focus_target()
        return self.query_one(self.TAB_FOCUS[tab])

    def action_show_tab(self, tab: str) -> None:
        tabs = self.query_one(TabbedContent)
        if isinstance(self.screen, ModalScreen):
            return
        if tab == "acts" and not self.query(ActsPane):
            self.call_next(self._show_acts_first_time)
            return
        target = self._focus_target(tab)
        # focus at once, before the switch (``focus()`` waits a refresh): else the old tab's focused
        # widget, hidden by the switch, hands focus to a sibling in its pane and TabbedContent
        # switches back to that tab
        self.set_focus(target, scroll_visible=False)
        tabs.active = tab

    async def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """Clicking a tab: put focus inside the pane, so keys go where the eyes are."""
        tab = event.pane.id
        if tab in self.TAB_FOCUS:
            if tab == "acts":
                await self._acts_pane()
            widget = self._focus_target(tab)
            if not widget.has_focus and (self.focused is None or tab not in {a.id for a in self.focused.ancestors}):
                self.call_after_refresh(widget.focus)

    def action_compare(self) -> None:
        """Pick a second model (or checkpoint, or run: its newest checkpoint) for the Weights tab."""
        if not isinstance(self.screen, ModalScreen):
            self.push_screen(PickerScreen(self.runs_dir, title="Compare the open model with"), self._compare_picked)

    def _compare_picked(self, choice: Choice) -> None:
        if choice is not None:
            self.action_show_tab("weights")
            self._open_other(choice[1])

    @work(thread=True, exclusive=True, exit_on_error=False, group="open-other")
    def _open_other(self, ref: str) -> None:
        store = backend.open_ref(ref)
        label = os.path.basename(os.path.normpath(ref)) or ref
        self.call_from_thread(self.query_one(DiffPanel).set_other, store, label)
        self.call_from_thread(self.notify, f"comparing with {label}: select a tensor", timeout=4, markup=False)

    def action_timeline(self) -> None:
        """The timeline of the first ticked (else the highlighted) run of the Runs tab."""
        if isinstance(self.screen, ModalScreen):
            return
        run = self.query_one(RunsPane).chosen_run()
        if run is None:
            self.notify("tick a run in the Runs tab (r) first", severity="warning")
            return
        self.push_screen(TimelineScreen(run))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"

    def _figures_here(self) -> tuple[list[Any], int]:
        """The figures shown in the current tab (or its modal-free screen), and the one to offer
        first: the focused figure, else the first."""
        from lminspect.tui.widgets.plot import PlotView

        active = self.query_one(TabbedContent).active
        pane = self.query_one(f"#{active}", TabPane)
        plots = [p for p in pane.query(PlotView) if p.has_figure and p.display]
        chosen = plots.index(self.focused) if self.focused in plots else 0
        return plots, chosen

    def action_save_figure(self) -> None:
        """ctrl+s: one of the tab's figures as PNG/SVG (the figures extra) or as text (.txt)."""
        if isinstance(self.screen, ModalScreen):
            return
        plots, chosen = self._figures_here()
        if not plots:
            self.notify("No figure to save here (tick a run, select a tensor, or run the lens first).",
                        severity="warning")
            return
        from lminspect.tui.screens.save_figure import SaveFigureScreen

        def picked(answer: tuple[int, Path] | None) -> None:
            if answer is not None:
                self._save_figure(plots[answer[0]], answer[1])

        self.push_screen(SaveFigureScreen([p.title_hint for p in plots], chosen), picked)

    @work(thread=True, exit_on_error=False, group="save")
    def _save_figure(self, plot: Any, path: Path) -> None:
        try:
            saved = plot.save_as(path)
        except Exception as exc:  # a bad path, no matplotlib: say so, keep running
            # markup off: "pip install 'lminspect[figures]'" would lose its "[figures]"
            self.call_from_thread(self.notify, backend.user_message(exc), severity="error", timeout=8, markup=False)
            return
        self.call_from_thread(self.notify, f"saved {saved}", markup=False)

    def action_open_tensor(self, name: str) -> None:
        """The command palette's tensor hits: show ``name`` in the Weights tab."""
        self.action_show_tab("weights")
        pane = self.query_one(WeightsPane)
        pane.show_tensor(name)
        pane.reveal(name)

    def action_open_plan(self, name: str) -> None:
        """The command palette's preset hits: the preset in the Stitch tab's plan field."""
        self.action_show_tab("stitch")
        field = self.query_one("#plan-input", Input)
        field.value = name
        field.cursor_position = len(name)

    def action_stitch_run(self) -> None:
        self.action_show_tab("stitch")
        self.query_one(StitchPane).action_run()

    def action_stitch_stop(self) -> None:
        self.query_one(StitchPane).action_stop()

    async def action_acts_add(self) -> None:
        """Activations tab, cursor in its path field."""
        if isinstance(self.screen, ModalScreen):
            return
        pane = await self._acts_pane()
        self.query_one(TabbedContent).active = "acts"
        pane.query_one("#acts-path").focus()


def run_app(model: str | None = None, runs_dir: str | Path = "runs", acts: Sequence[str | Path] = ()) -> None:
    LMInspectApp(model, runs_dir, acts=acts).run()
