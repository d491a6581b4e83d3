"""The ``--threads`` option every compute command shares (see ``lminspect.runtime`` for the rule)."""

from __future__ import annotations

from typing import Annotated

import typer

from lminspect.runtime import THREADS_HELP

Threads = Annotated[int | None, typer.Option("--threads", min=1, help=THREADS_HELP, show_default=False)]
