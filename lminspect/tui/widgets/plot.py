"""A Static that shows a plotext figure and redraws it at its own size.

textual-plotext is broken with plotext 6 (see DESIGN.md), so we render
``plt.build()`` text ourselves: the widget keeps a *figure function*
``(width, height) -> str`` and calls it again whenever its size changes.
Figures are built on the UI thread; each takes ~10 ms.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual.events import Resize
from textual.widgets import Static

FigureFn = Callable[[int, int], str]
SaveFn = Callable[[Path], Path]  # writes the figure's data as PNG/SVG (lminspect.figures)


class PlotView(Static):
    """Shows one plotext figure, or a one-line message when there is nothing to plot.

    The app's save key (ctrl+s) offers the shown tab's figures: any as text (``.txt``), and one
    shown with a ``save`` function as PNG/SVG too."""

    DEFAULT_CSS = """
    PlotView {
        height: 16;
        width: 1fr;
        min-width: 30;
    }
    PlotView.-message {
        height: auto;
        color: $text-muted;
    }
    """

    def __init__(self, message: str = "", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(message, id=id, classes=classes)
        self._figure: FigureFn | None = None
        self.save: SaveFn | None = None
        self.title_hint = "figure"  # the file name the save dialog proposes
        self._message = message
        self._last_size: tuple[int, int] | None = None
        self._plain = message
        self.set_class(True, "-message")

    @property
    def text(self) -> str:
        """The plain text currently shown (for tests and benchmarks)."""
        return self._plain

    @property
    def has_figure(self) -> bool:
        return self._figure is not None

    def save_as(self, path: Path) -> Path:
        """Write the figure: ``.txt`` as the text shown (always possible), else PNG/SVG through
        ``save`` (``lminspect.figures``, the figures extra). An existing file is refused."""
        from lminspect.errors import UserError

        if path.suffix.lower() == ".txt":
            from lminspect.fsutil import atomic_write_text, check_output

            check_output(path, kind="file", overwrite=False, option="save")
            atomic_write_text(path, self._plain.rstrip("\n") + "\n")
            return path
        if self.save is None:
            raise UserError(f"{path}: this figure saves as text only; give a name ending in .txt")
        return self.save(path)

    def show_message(self, message: str) -> None:
        self._figure = None
        self.save = None
        self._message = message
        self._plain = message
        self.set_class(True, "-message")
        self.update(message)

    def show_figure(self, figure: FigureFn, save: SaveFn | None = None, name: str = "figure") -> None:
        self._figure = figure
        self.save = save
        self.title_hint = name
        self._last_size = None
        self.set_class(False, "-message")
        self._redraw()

    def _redraw(self) -> None:
        if self._figure is None:
            return
        width, height = self.content_size.width, self.content_size.height
        if width <= 0 or height <= 0:
            # not laid out yet; on_resize draws it
            width, height = 80, 16
        if self._last_size == (width, height):
            return
        self._last_size = (width, height)
        try:
            raw = self._figure(width, height)
        except Exception as exc:  # a broken figure must not take the app down
            raw = f"could not draw figure: {type(exc).__name__}: {exc}"
        text = Text.from_ansi(raw, no_wrap=True)
        self._plain = text.plain
        self.update(text)

    def on_resize(self, event: Resize) -> None:
        self._redraw()
