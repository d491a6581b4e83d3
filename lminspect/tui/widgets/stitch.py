"""The Stitch tab: a layer plan checked as you type, a prompt, and streamed generation.

The model is loaded lazily, in the generation worker, on the first Run. The
worker pulls one token at a time from ``lminspect.generate.generate`` and posts
each text piece to the UI; it checks ``is_cancelled`` between tokens, so Stop
takes effect within one token. Compare interleaves the baseline (no plan) and
the plan, one token each, so both columns grow side by side.

Lens (ctrl+l) shows the logit lens of the current plan for the current prompt below the
outputs: the top tokens read out after every plan position and, with a target token, its
probability across positions. It runs in its own worker, never while a generation runs
(both would hook the same model).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.events import Focus
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Label, Static, TextArea
from textual.worker import Worker, WorkerState, get_current_worker

from lminspect.tui import backend
from lminspect.tui.messages import GenerationPiece, GenerationStatus
from lminspect.tui.widgets.plot import PlotView
from lminspect.tui.widgets.stream import StreamView
from lminspect.tui.widgets.ticks import TickBox

DEFAULT_PROMPT = "Once upon a time"
LABEL_WIDTH = 13


def error_column(exc: BaseException) -> int | None:
    """1-based column of a plan error: the ``UserError.column`` the parser sets, when it does."""
    value = getattr(exc, "column", None)
    return value if isinstance(value, int) else None


def plan_summary(plan: list[Any], limit: int = 40) -> str:
    parts = []
    for call in plan[:limit]:
        s = str(call.index)
        if getattr(call, "attn_scale", 1.0) != 1.0 or getattr(call, "mlp_scale", 1.0) != 1.0:
            s += f"(a{call.attn_scale:g},m{call.mlp_scale:g})"
        for kind, scales in (("h", getattr(call, "heads", ())), ("kv", getattr(call, "kv_heads", ()))):
            s += "".join(f"[{kind}{h}={v:g}]" for h, v in scales)
        parts.append(s)
    more = f" ... (+{len(plan) - limit})" if len(plan) > limit else ""
    return " ".join(parts) + more


class PromptArea(TextArea):
    """The prompt field. Focused from the keyboard (Tab, a tab switch) the cursor goes to the end,
    so typed text follows the old prompt instead of landing in front of it; a click still puts it
    where clicked (Textual delivers the click after the focus)."""

    def on_focus(self, event: Focus) -> None:
        if not event.from_app_focus:  # the terminal window regaining focus: leave the cursor be
            self.move_cursor(self.document.end)


class StitchPane(Widget):
    BINDINGS = [
        # priority: they must work while typing in the plan/prompt (Input would take ctrl+x as cut)
        Binding("ctrl+r", "run", "Run", id="stitch.run", priority=True),
        Binding("ctrl+x", "stop", "Stop", id="stitch.stop", priority=True),
        Binding("ctrl+l", "lens", "Lens", id="stitch.lens", priority=True),
    ]

    DEFAULT_CSS = """
    StitchPane { layout: vertical; height: 1fr; padding: 0 1; }
    StitchPane .row { height: auto; margin-top: 1; }
    StitchPane .row > Label { width: 13; padding: 0 1 0 0; text-align: right; }
    StitchPane .row > Label.narrow { width: auto; padding: 0 1 0 2; }
    StitchPane #plan-input { width: 1fr; }
    StitchPane #plan-error { height: auto; padding-left: 13; }
    StitchPane #plan-error.invalid { color: $error; }
    StitchPane #plan-error.valid { color: $success; }
    StitchPane #prompt { height: 3; width: 1fr; }
    StitchPane #max-tokens { width: 8; }
    StitchPane #temperature { width: 8; }
    StitchPane Checkbox { margin-left: 2; }
    StitchPane Button { margin-left: 2; min-width: 8; }
    StitchPane #gen-status { height: auto; color: $text-muted; padding-left: 1; }
    StitchPane #outputs { height: 1fr; min-height: 5; }
    StitchPane .out-col { width: 1fr; }
    StitchPane .out-col > Label { text-style: bold; padding-left: 1; }
    StitchPane #col-baseline { display: none; }
    StitchPane.compare #col-baseline { display: block; }
    StitchPane #lens-target { width: 16; }
    StitchPane #lens-panel { display: none; height: 1fr; min-height: 6; border-top: solid $primary; }
    StitchPane.lens #lens-panel { display: block; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.store: Any = None
        self.model: Any = None
        self.tokenizer: Any = None
        self.plan: list[Any] | None = None
        self.plan_ok = True
        self.timings: dict[str, float] = {}
        self._worker: Worker | None = None
        self._generations: list[Any] = []
        self.last_stats: list[Any] = []
        self._lens_worker: Worker | None = None
        self._load_lock = threading.Lock()

    def compose(self) -> ComposeResult:
        with Horizontal(classes="row"):
            yield Label("layer plan")
            yield Input(placeholder="empty = every layer once; e.g. 0-3,2,3  15r3  skip:2  all*0.9", id="plan-input",
                        compact=True)
            yield Label("lens target", classes="narrow")
            yield Input(placeholder="Paris or id:N", id="lens-target", compact=True,
                        tooltip="A bare word means the word after a space (Paris is ' Paris'); quote it for the "
                                "exact text ('\"Paris\"'), or give id:N")
            yield Button("Lens", id="lens", variant="primary", compact=True)
        yield Static("Open a model to check plans.", id="plan-error", markup=False)
        with Horizontal(classes="row"):
            yield Label("prompt")
            yield PromptArea(DEFAULT_PROMPT, id="prompt", soft_wrap=True, show_line_numbers=False, compact=True)
        with Horizontal(classes="row"):
            yield Label("max tokens")
            yield Input("48", id="max-tokens", type="integer", compact=True)
            yield Label("temp", classes="narrow")
            yield Input("0", id="temperature", type="number", compact=True)
            yield TickBox("Compare", id="compare", compact=True)
            yield Button("Run", id="run", variant="success", compact=True)
            yield Button("Stop", id="stop", variant="error", disabled=True, compact=True)
        yield Static("", id="gen-status", markup=False)
        with Horizontal(id="outputs"):
            with Vertical(classes="out-col", id="col-baseline"):
                yield Label("baseline (every layer once)")
                yield StreamView(id="out-baseline")
            with Vertical(classes="out-col", id="col-plan"):
                yield Label("plan", id="plan-label")
                yield StreamView(id="out-plan")
        with VerticalScroll(id="lens-panel"):
            yield Static("", id="lens-view", markup=False)
            yield PlotView("", id="lens-plot")  # the target's probability; ctrl+s saves it

    # -- the model ---------------------------------------------------------------

    def set_store(self, store: Any) -> None:
        if store is not self.store:
            self.model = None
            self.tokenizer = None
        self.store = store
        self.validate_plan(self.query_one("#plan-input", Input).value)

    # -- plan validation (as you type) ----------------------------------------------

    @on(Input.Changed, "#plan-input")
    def _plan_changed(self, event: Input.Changed) -> None:
        self.validate_plan(event.value)

    def validate_plan(self, text: str) -> bool:
        out = self.query_one("#plan-error", Static)
        out.set_class(False, "invalid")
        out.set_class(False, "valid")
        if self.store is None:
            out.update("Open a model to check plans.")
            self.plan, self.plan_ok = None, True
            return True
        layers = backend.n_layers(self.store)
        if not text.strip():
            self.plan, self.plan_ok = None, True
            out.update(f"full model: {layers if layers is not None else '?'} layers, each once")
            out.set_class(True, "valid")
            return True
        if layers is None:
            out.update("this model's config does not say how many layers it has")
            self.plan, self.plan_ok = None, False
            out.set_class(True, "invalid")
            return False
        try:
            plan = backend.parse_plan(text, layers)
        except Exception as exc:  # UserError from the parser (anything else is shown too)
            col = error_column(exc)
            msg = backend.user_message(exc)
            caret = (" " * (col - 1) + "^\n") if col is not None and 0 < col <= len(text) + 1 else ""
            out.update(f"{caret}error: {msg}")
            self.plan, self.plan_ok = None, False
            out.set_class(True, "invalid")
            return False
        self.plan, self.plan_ok = list(plan), True
        out.update(f"ok: {len(plan)} layer calls: {plan_summary(self.plan)}")
        out.set_class(True, "valid")
        return True

    # -- running -----------------------------------------------------------------------

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        """Enter in any field of the tab runs, as the Run button does (in the target field: Lens)."""
        event.stop()
        if event.input.id == "lens-target":
            self.action_lens()
        else:
            self.action_run()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "run":
            event.stop()
            self.action_run()
        elif event.button.id == "stop":
            event.stop()
            self.action_stop()
        elif event.button.id == "lens":
            event.stop()
            self.action_lens()

    @on(Checkbox.Changed, "#compare")
    def _compare_changed(self, event: Checkbox.Changed) -> None:
        self.set_class(event.value, "compare")

    def _params(self) -> tuple[int, float] | None:
        try:
            max_new = int(self.query_one("#max-tokens", Input).value or "48")
            temperature = float(self.query_one("#temperature", Input).value or "0")
        except ValueError:
            self.app.notify("max tokens must be an integer and temperature a number", severity="error")
            return None
        if max_new <= 0 or temperature < 0:
            self.app.notify("max tokens must be > 0 and temperature >= 0", severity="error")
            return None
        return max_new, temperature

    def _ready(self) -> bool:
        """A model is open and the plan field parses; otherwise say which is missing."""
        if self.store is None:
            self.app.notify("Open a model first (press o).", severity="warning")
            return False
        if not self.validate_plan(self.query_one("#plan-input", Input).value):
            self.app.notify("Fix the layer plan first.", severity="error")
            return False
        return True

    def action_run(self) -> None:
        if not self._ready():
            return
        params = self._params()
        if params is None:
            return
        prompt = self.query_one("#prompt", TextArea).text
        if not prompt.strip():
            self.app.notify("Type a prompt first.", severity="warning")
            return
        if self._lens_worker is not None and self._lens_worker.is_running:
            self.app.notify("Wait for the lens to finish.", severity="warning")
            return
        compare = self.query_one("#compare", Checkbox).value
        for view_id in ("#out-plan", "#out-baseline"):
            self.query_one(view_id, StreamView).start(prompt)
        self.query_one("#plan-label", Label).update(
            "plan: " + (plan_summary(self.plan, 20) if self.plan is not None else "every layer once")
        )
        self.timings = {"run_pressed": time.perf_counter()}
        self._buttons_for(True)
        self._worker = self._generate(prompt, self.plan, params[0], params[1], compare)

    def _buttons_for(self, running: bool) -> None:
        """Run off and Stop on while generating (and back). A button that goes off while it has
        focus would drop it, and the app's letter keys would then fire on what the user types
        next (``c`` opened the compare picker): the prompt takes focus instead."""
        run, stop = self.query_one("#run", Button), self.query_one("#stop", Button)
        if (run if running else stop).has_focus:
            self.query_one("#prompt", TextArea).focus()
        run.disabled, stop.disabled = running, not running

    def action_stop(self) -> None:
        """Cancel the worker and the generations; the engine checks between tokens."""
        if self._worker is not None and self._worker.is_running:
            # the generations first, so the engine records "cancelled" before the loop exits
            for g in list(self._generations):
                cancel = getattr(g, "cancel", None)
                if cancel is not None:
                    cancel()
            self._worker.cancel()
            self.query_one("#gen-status", Static).update("stopping...")

    def _status(self, text: str, done: bool = False) -> None:
        self.post_message(GenerationStatus(text, done))

    def _ensure_model(self, then: str) -> None:
        """Load the model and tokenizer once (from a worker thread), saying so in the status line."""
        with self._load_lock:
            if self.model is None:
                self._status("loading the model (first run only)...")
                t0 = time.perf_counter()
                self.model, self.tokenizer = backend.open_engine(self.store)
                self._status(f"model loaded in {time.perf_counter() - t0:.1f} s; {then}...")
            else:
                self._status(f"{then}...")

    # -- lens ----------------------------------------------------------------------------

    def action_lens(self) -> None:
        if not self._ready():
            return
        if self._worker is not None and self._worker.is_running:
            self.app.notify("Wait for the generation to finish (or stop it).", severity="warning")
            return
        prompt = self.query_one("#prompt", TextArea).text
        if not prompt.strip():
            self.app.notify("Type a prompt first.", severity="warning")
            return
        target = self.query_one("#lens-target", Input).value or None
        # Compare ticked: the baseline (every layer once) beside the plan, as Run shows them
        plans: dict[str, list[Any] | None] = {"plan": self.plan}
        if self.query_one("#compare", Checkbox).value and self.plan is not None:
            plans = {"baseline": None, "plan": self.plan}
        self.add_class("lens")
        self.query_one("#lens-view", Static).update("computing...")
        self.query_one("#lens-plot", PlotView).show_message("")
        self._lens_worker = self._lens(prompt, plans, target)

    @work(thread=True, exclusive=True, exit_on_error=False, group="lens")
    def _lens(self, prompt: str, plans: dict[str, list[Any] | None], target: str | None) -> None:
        from lminspect.errors import UserError

        self._ensure_model("reading the lens")
        try:
            results, tgt = backend.lens_results(self.model, self.tokenizer, prompt, plans, target)
        except UserError as exc:  # a bad target or an over-long prompt: said in the panel
            self.app.call_from_thread(self._show_lens, None, None, f"lens: {exc.message}")
            self._status(f"lens: {exc.message}", done=True)
            return
        self.app.call_from_thread(self._show_lens, results, tgt, "")
        self._status("lens done" + (" (baseline and plan)" if len(results) > 1 else ""), done=True)

    def _show_lens(self, results: dict[str, Any] | None, tgt: Any, error: str) -> None:
        """The tables in the panel, and the target's probability as a figure that ctrl+s saves."""
        view, plot = self.query_one("#lens-view", Static), self.query_one("#lens-plot", PlotView)
        if results is None:
            view.update(error)
            plot.show_message("")
            return
        view.update(backend.lens_tables(results, tgt))
        if tgt is None:
            plot.show_message("type a lens target (Paris, '\"Paris\"' exact, or id:N) for its probability "
                              "after each plan position")
            return
        plot.show_figure(lambda w, h: backend.lens_figure(results, w, h),
                         save=lambda path: backend.save_lens(results, path), name="lens")

    @work(thread=True, exclusive=True, exit_on_error=False, group="generate")
    def _generate(self, prompt: str, plan: list[Any] | None, max_new: int, temperature: float, compare: bool) -> None:
        worker = get_current_worker()
        self._ensure_model("generating")
        if worker.is_cancelled:
            self._status("stopped", done=True)
            return
        generate = backend.generate_fn()
        streams: list[tuple[str, Any]] = []
        if compare:
            streams.append(("baseline", generate(self.model, self.tokenizer, prompt, max_new_tokens=max_new,
                                                 temperature=temperature, plan=None)))
        streams.append(("plan", generate(self.model, self.tokenizer, prompt, max_new_tokens=max_new,
                                         temperature=temperature, plan=plan)))
        self._generations = [g for _, g in streams]
        t_start = time.perf_counter()
        pieces = backend.interleave(dict(streams), cancelled=lambda: worker.is_cancelled)
        try:
            for name, piece in pieces:
                self.post_message(GenerationPiece(name, str(piece)))
        finally:
            pieces.close()  # closes every generation, also when posting fails
            self._generations = []
        self.last_stats = [getattr(g, "stats", None) for _, g in streams]  # for tests and benchmarks
        state = "stopped" if worker.is_cancelled else "done"
        lines = [f"{state} in {time.perf_counter() - t_start:.2f} s"]
        for name, g in streams:
            st = getattr(g, "stats", None)
            line = st.line() if st is not None and hasattr(st, "line") else ""
            lines.append(f"{name}: {line}" if compare else line)
        self._status("; ".join(x for x in lines if x), done=True)

    def on_generation_piece(self, message: GenerationPiece) -> None:
        if "first_piece" not in self.timings:
            self.timings["first_piece"] = time.perf_counter()
            self.call_after_refresh(self._mark, "first_paint")
        self.query_one(f"#out-{message.column}", StreamView).write(message.text)

    def _mark(self, key: str) -> None:
        self.timings[key] = time.perf_counter()

    def on_generation_status(self, message: GenerationStatus) -> None:
        self.query_one("#gen-status", Static).update(message.text)
        if message.done:
            self._buttons_for(False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "lens" and event.state == WorkerState.ERROR:
            self.query_one("#lens-view", Static).update("the lens failed (see the error)")
            self.app.report_error("Logit lens failed", event.worker.error)
            return
        if event.worker.group != "generate":
            return
        if event.state == WorkerState.ERROR:
            self.query_one("#gen-status", Static).update("generation failed (see the error)")
            self._buttons_for(False)
            self.app.report_error("Generation failed", event.worker.error)
        elif event.state == WorkerState.CANCELLED:
            self._buttons_for(False)
