"""Save a figure: which one (when the tab shows several) and a path; PNG or SVG by the suffix
(the figures extra, matplotlib) or ``.txt`` (the figure as the terminal shows it, always there).
Enter saves, Escape cancels."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Select

TEXT_SUFFIX = ".txt"


def default_suffix() -> str:
    """``.png`` where matplotlib is installed (the figures extra), else ``.txt``."""
    return ".png" if find_spec("matplotlib") is not None else TEXT_SUFFIX


def file_name(hint: str, suffix: str) -> str:
    """A file name from a figure's name: ``layers.2.mlp.up.weight_hist`` stays, odd characters go."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in hint).strip("_") or "figure"
    return name + suffix


class SaveFigureScreen(ModalScreen[tuple[int, Path] | None]):
    """Dismisses with (the index of the chosen figure, the path typed), or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    SaveFigureScreen { align: center middle; }
    SaveFigureScreen > Vertical {
        width: 80%; max-width: 90; height: auto; border: thick $primary; background: $surface; padding: 0 1;
    }
    SaveFigureScreen Label { margin: 1 0 0 0; }
    """
    AUTO_FOCUS = "#save-path"

    def __init__(self, figures: list[str], chosen: int = 0) -> None:
        """``figures``: the names of the tab's figures (``loss``, ``...weight_hist``)."""
        super().__init__()
        self._figures = figures
        self._chosen = chosen
        self._suffix = default_suffix()

    def compose(self) -> ComposeResult:
        with Vertical():
            # markup off: "[figures]" is the extra's name, not a style tag
            yield Label("Save the figure as PNG or SVG (needs the [figures] extra) or as text (.txt), "
                        "by the file name's suffix", markup=False)
            if len(self._figures) > 1:
                yield Select([(name, i) for i, name in enumerate(self._figures)], value=self._chosen,
                             allow_blank=False, id="save-which", compact=True)
            yield Input(file_name(self._figures[self._chosen], self._suffix), id="save-path")
            yield Label("Enter saves, Escape cancels; an existing file is not replaced.", markup=False)

    @on(Select.Changed, "#save-which")
    def _which_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, int):
            self._chosen = event.value
            field = self.query_one("#save-path", Input)
            suffix = Path(field.value).suffix or self._suffix
            field.value = file_name(self._figures[self._chosen], suffix)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        value = event.value.strip()
        self.dismiss((self._chosen, Path(value)) if value else None)

    def action_cancel(self) -> None:
        self.dismiss(None)
