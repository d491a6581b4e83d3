"""Tick marks that read without colour: Textual's checkbox and selection list draw the same ``X``
ticked or not and tell the two apart by colour only (issue 29). Here a ticked box shows ``X`` and
an unticked one a blank, in the Compare box, the Runs list and the Activations list alike."""

from __future__ import annotations

from rich.segment import Segment
from textual.strip import Strip
from textual.widgets import Checkbox, SelectionList
from textual.widgets.option_list import OptionDoesNotExist

TICKED, UNTICKED = "X", " "


class TickBox(Checkbox):
    """A checkbox whose mark is ``X`` when ticked and a blank when not."""

    @property
    def BUTTON_INNER(self) -> str:  # noqa: N802 - overrides Textual's class constant
        return TICKED if self.value else UNTICKED


class TickList(SelectionList[str]):
    """A selection list whose rows start ``▐X▌`` when ticked and ``▐ ▌`` when not."""

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        try:
            selection = self.get_option_at_index(self.scroll_offset.y + y)
        except OptionDoesNotExist:
            return strip
        segments = list(strip)
        if len(segments) < 3:
            return strip
        # SelectionList draws [left, inner, right, " ", prompt...]: swap the inner mark only
        inner = segments[1]
        mark = TICKED if selection.value in self._selected else UNTICKED
        segments[1] = Segment(mark, inner.style, inner.control)
        return Strip(segments, strip.cell_length)
