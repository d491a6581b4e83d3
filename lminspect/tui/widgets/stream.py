"""A scrolling, word-wrapping text view that grows as generated pieces arrive.

Textual's ``Log`` does not wrap, and ``RichLog`` starts a new line per write;
generated text needs neither. Auto-scrolls only when the view was already at
the bottom, so reading back while tokens stream is not interrupted (as elia does).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static


class StreamView(VerticalScroll):
    DEFAULT_CSS = """
    StreamView { height: 1fr; border: round $primary-darken-2; padding: 0 1; }
    StreamView > Static { width: 1fr; height: auto; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._parts: list[str] = []
        self._prompt_len = 0

    def compose(self) -> ComposeResult:
        yield Static("", markup=False)

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def start(self, prompt: str) -> None:
        """Clear and show the prompt (dim); generated text follows it."""
        self._parts = [prompt]
        self._prompt_len = len(prompt)
        self._render_text()
        self.scroll_home(animate=False)

    def write(self, piece: str) -> None:
        at_bottom = self.scroll_y >= self.max_scroll_y - 1
        self._parts.append(piece)
        self._render_text()
        if at_bottom:
            self.call_after_refresh(self.scroll_end, animate=False)

    def _render_text(self) -> None:
        full = self.text
        text = Text(full[: self._prompt_len], style="dim")
        text.append(full[self._prompt_len :])
        self.query_one(Static).update(text)
