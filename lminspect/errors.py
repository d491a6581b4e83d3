"""User-facing errors.

Anything the user can fix (a bad file, a bad plan, a bad flag) is raised as a ``UserError``
with a one-line message naming *what* and *where*: a plain exception that knows nothing of the
command line. It may carry a ``hint`` (what to try) and where the problem is: ``column`` (1-based,
in the text the user typed, e.g. a plan) and ``option`` (the setting it concerns, e.g.
``--plan``). The faces present it: the CLI (``lminspect.cli``, its command group) prints
``lminspect: error: <message>`` on stderr and exits with code 2, no traceback (also under typer's
``CliRunner``); the TUI puts a caret under ``column``; in the REPL it is an ordinary exception.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input; the message is shown as one line."""

    def __init__(self, message: str, hint: str | None = None, *, column: int | None = None,
                 option: str | None = None) -> None:
        message = str(message)
        if len(message) > 1000:  # user input quoted whole (a huge plan): the line stays a line
            message = f"{message[:600]} …({len(message) - 800:,} characters cut)… {message[-200:]}"
        self.message = " ".join(message.split())
        super().__init__(self.message)
        self.hint = hint
        self.column = column  # 1-based column in the text the user typed (a plan), when known
        self.option = option  # the option / setting the problem concerns, when known

    def one_line(self) -> str:
        """The line a face prints: ``lminspect: error: <message> (hint: <hint>)``."""
        line = f"lminspect: error: {self.message}"
        return line + (f" (hint: {self.hint})" if self.hint else "")


class FormatError(UserError):
    """A model/data file that is corrupt or not what its name says."""
