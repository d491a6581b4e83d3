"""Save a figure: a path field (PNG or SVG by its suffix); Enter saves, Escape cancels."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label


class SaveFigureScreen(ModalScreen[Path | None]):
    """Dismisses with the path typed (or None)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    SaveFigureScreen { align: center middle; }
    SaveFigureScreen > Vertical {
        width: 80%; max-width: 90; height: auto; border: thick $primary; background: $surface; padding: 0 1;
    }
    SaveFigureScreen Label { margin: 1 0 0 0; }
    """

    def __init__(self, proposed: str) -> None:
        super().__init__()
        self._proposed = proposed

    def compose(self) -> ComposeResult:
        with Vertical():
            # markup off: Textual would read "[figures]" as a style tag and drop it
            yield Label("Save the figure (PNG or SVG, by the file name; needs the [figures] extra)", markup=False)
            yield Input(self._proposed, id="save-path")
            yield Label("Enter saves, Escape cancels; an existing file is not replaced.")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        self.dismiss(Path(value) if value else None)

    def action_cancel(self) -> None:
        self.dismiss(None)
