"""``lminspect tui``: the Textual workbench (textual is imported only when the command runs)."""

from __future__ import annotations

from pathlib import Path

import typer

from lminspect.cli.threads import Threads


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""

    @app.command(rich_help_panel="Interactive")
    def tui(
        model: str | None = typer.Argument(
            None,
            help="Model to open: .safetensors, HF dir, .gguf, a fetched name (smollm2) or hf:ORG/NAME. "
            "Without it, pick from fetched/recent models and runs.",
            show_default=False,
        ),
        runs: Path = typer.Option(Path("runs"), "--runs", help="Directory holding training runs (Runs tab)."),
        acts: list[Path] | None = typer.Option(
            None, "--acts", exists=True,
            help="Results dir of `lminspect activations`, or a folder of them (Activations tab); repeatable.",
        ),
        threads: Threads = None,
    ) -> None:
        """Browse weights, stitch layers, watch training runs and activation statistics in a terminal UI.

    Example: lminspect tui smollm2 --acts acts/
    """
        from lminspect.runtime import set_threads
        from lminspect.tui.app import run_app

        set_threads(threads)

        run_app(model, runs, acts or [])
