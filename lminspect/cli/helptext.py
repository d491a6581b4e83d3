"""Help texts that read well at any terminal width.

Command docstrings are wrapped at ~100 columns in the source; typer's rich help keeps those
single line breaks, so ``--help`` showed stray breaks mid-sentence. :func:`reflow_app` joins
the lines of each paragraph once, after every command is registered. Paragraphs that are
examples or command lines (starting with ``Example``, ``lminspect`` or indented) keep their
line breaks.
"""

from __future__ import annotations

import inspect
from typing import Any

_KEEP = ("Example", "lminspect ", "$ ", "  ", "- ")


def reflow(text: str | None) -> str | None:
    """``text`` with each paragraph's single line breaks joined (examples kept as written)."""
    if not text:
        return text
    out = []
    for para in inspect.cleandoc(text).split("\n\n"):
        lines = para.split("\n")
        if any(ln.startswith(_KEEP) for ln in lines[1:]) or lines[0].startswith(("$ ", "  ")):
            out.append(para)
        else:
            out.append(" ".join(ln.strip() for ln in lines))
    return "\n\n".join(out)


def reflow_app(app: Any) -> None:
    """Reflow the help of every command and group registered on the Typer ``app``, recursively."""
    for cmd in app.registered_commands:
        cmd.help = reflow(cmd.help or inspect.getdoc(cmd.callback))
    for group in app.registered_groups:
        sub = group.typer_instance
        if group.help:
            group.help = reflow(group.help)
        if sub is not None:
            if sub.info.help:
                sub.info.help = reflow(sub.info.help)
            reflow_app(sub)
