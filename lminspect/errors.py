"""User-facing errors.

Anything the user can fix (a bad file, a bad plan, a bad flag) is raised as a
``UserError`` with a one-line message naming *what* and *where*. It is the
``ClickException`` that typer's command runner catches (recent typer vendors its
own copy of click), so the CLI (and ``CliRunner`` in tests) prints
``lminspect: error: <message>`` on stderr and exits with code 2, no traceback.
In the REPL it is an ordinary exception.
"""

from __future__ import annotations

import sys

try:  # typer >= 0.2x ships its own click; its runner catches only that class
    from typer._click.exceptions import ClickException
except ImportError:  # older typer runs on the click package
    from click import ClickException


class UserError(ClickException):
    """A problem with the user's input; the message is shown as one line."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        message = str(message)
        if len(message) > 1000:  # user input quoted whole (a huge plan): the line stays a line
            message = f"{message[:600]} …({len(message) - 800:,} characters cut)… {message[-200:]}"
        super().__init__(" ".join(message.split()))
        self.hint = hint

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        out = file or sys.stderr
        line = f"lminspect: error: {self.message}"
        if self.hint:
            line += f" (hint: {self.hint})"
        print(line, file=out)


class FormatError(UserError):
    """A model/data file that is corrupt or not what its name says."""
