"""The ``lminspect`` command: a thin Typer layer over the library.

Each command group lives in its own module with a ``register(app)`` function.
Command modules import only typer/rich at module level; torch, textual and the
formats are imported inside the command functions so ``lminspect --help`` stays fast.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from lminspect.cli import (
    activations_cmd,
    attention_cmd,
    compare_cmd,
    data_cmd,
    generate_cmd,
    grow_cmd,
    lens_cmd,
    repl_cmd,
    stitch_cmd,
    train_cmd,
    tui_cmd,
    weights_cmd,
)
from lminspect.cli.helptext import reflow_app

try:  # recent typer ships its own copy of click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - a typer that uses click itself
    from click.exceptions import UsageError


class _OneLineErrors(TyperGroup):
    """Print a UserError, and a usage error (unknown command or option, bad or missing
    value), as one plain line and exit 2; typer's rich mode would draw a box under a
    usage line. Sub-commands parse their arguments inside this invoke, so one place
    covers every command; so does Ctrl-C: exit 130 with one line (``runtime.interrupted``),
    "nothing written" unless the command says what it saved in its own ``interrupted``."""

    def invoke(self, ctx):  # noqa: ANN001, ANN201 - click's signature
        from lminspect.errors import UserError
        from lminspect.runtime import interrupted

        try:
            with interrupted():
                return super().invoke(ctx)
        except UserError as e:  # a plain exception: here, and only here, it becomes exit code 2
            print(e.one_line(), file=sys.stderr)
            raise typer.Exit(2) from None
        except UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # a bare group: typer shows its help
                raise
            where = e.ctx.command_path if e.ctx is not None else ctx.command_path
            print(f"lminspect: error: {where}: {e.format_message()} (see '{where} -h')", file=sys.stderr)
            raise typer.Exit(2) from None


app = typer.Typer(
    name="lminspect",
    cls=_OneLineErrors,
    help="A terminal workbench for taking small language models apart.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)



@app.callback()
def _root() -> None:
    """lminspect: look at weights, cut and repeat layers, train variants, compare curves."""


for _module in (
    weights_cmd,
    generate_cmd,
    stitch_cmd,
    attention_cmd,
    data_cmd,
    train_cmd,
    activations_cmd,
    compare_cmd,
    grow_cmd,
    lens_cmd,
    tui_cmd,
    repl_cmd,
):
    _module.register(app)


@app.command(rich_help_panel="Misc")
def version() -> None:
    """Print lminspect's version.

    Example: lminspect version
    """
    from lminspect import __version__

    print(__version__)


reflow_app(app)  # after every registration: docstrings wrapped in the source read as paragraphs


def main() -> None:
    app()
