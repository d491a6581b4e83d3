"""Open a model or a run: fetched models, recent paths, runs under the runs dir, or a typed path."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from lminspect.tui import backend

# dismiss value: ("model", ref) | ("run", path) | None
Choice = tuple[str, str] | None


class PickerScreen(ModalScreen[Choice]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    DEFAULT_CSS = """
    PickerScreen { align: center middle; }
    PickerScreen > Vertical {
        width: 90%; max-width: 110; height: 80%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    PickerScreen OptionList { height: 1fr; }
    PickerScreen Label { margin: 1 0 0 0; text-style: bold; width: 100%; }
    """

    def __init__(self, runs_dir: Path, title: str = "Open a model or a run") -> None:
        super().__init__()
        self._runs_dir = runs_dir
        self._title = title

    def compose(self) -> ComposeResult:
        options: list[Option] = []
        for km in backend.known_models():
            options.append(Option(f"model  {km.label}", id=f"model:{km.ref}"))
        for run in backend.find_runs(self._runs_dir):
            options.append(Option(f"run    {run}", id=f"run:{run}"))
        if not options:  # nothing known yet: start in the path field
            self.AUTO_FOCUS = "#picker-input"
        with Vertical():
            yield Label(self._title)
            if options:
                yield OptionList(*options, id="picker-list")
            else:
                yield OptionList(
                    Option(
                        "No fetched models, recent models or runs yet. Type a path below "
                        "(or `lminspect fetch smollm2` first).",
                        disabled=True,
                    ),
                    id="picker-list",
                )
            yield Label("...or type a model path / name (safetensors, HF dir, GGUF, smollm2, hf:ORG/NAME)")
            yield Input(placeholder="path or name, then Enter", id="picker-input")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        oid = event.option.id or ""
        kind, _, value = oid.partition(":")
        if kind in ("model", "run") and value:
            self.dismiss((kind, value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        if value:
            self.dismiss(("model", value))

    def action_cancel(self) -> None:
        self.dismiss(None)
