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
    eval_cmd,
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
        except OSError as e:  # stdout gone or full, a full disk outside the atomic writers
            code = _output_failed(e)
            if code is None:
                raise
            raise typer.Exit(code) from None
        except UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # a bare group: typer shows its help
                raise
            where = e.ctx.command_path if e.ctx is not None else ctx.command_path
            print(f"lminspect: error: {where}: {e.format_message()} (see '{where} -h')", file=sys.stderr)
            raise typer.Exit(2) from None


def _output_failed(e: BaseException) -> int | None:
    """One line (or none, for a closed pipe) for a write that cannot go on; the exit code, or
    None when ``e`` is another kind of error."""
    import errno

    from lminspect.fsutil import disk_full_error, is_disk_full

    if isinstance(e, BrokenPipeError) or getattr(e, "errno", None) == errno.EPIPE:
        _silence_stdout()
        return 1  # the reader left (| head): nothing to say
    if not is_disk_full(e):
        return None
    if getattr(e, "filename", None):
        from pathlib import Path

        print(f"lminspect: error: {disk_full_error(Path(e.filename)).message}", file=sys.stderr)
        return 2
    if _stdout_is_full():  # no file named: standard output, when it is what fails
        _silence_stdout()
        print("lminspect: error: cannot write to standard output: no space left (is it /dev/full or a full "
              "disk?)", file=sys.stderr)
        return 2
    print(f"lminspect: error: a write failed: no room left ({e.strerror or e}); files replaced atomically "
          "are as they were", file=sys.stderr)
    return 2


def _stdout_is_full() -> bool:
    """Whether standard output is what cannot take more: a device that is no terminal (/dev/full),
    a file on a full disk or at the file-size limit, or a buffer that still cannot be flushed."""
    import os
    import stat

    try:
        fd = sys.stdout.fileno()
        st = os.fstat(fd)
    except (OSError, ValueError, AttributeError):
        return False
    if stat.S_ISCHR(st.st_mode) and not os.isatty(fd):
        return True
    if stat.S_ISREG(st.st_mode):
        import resource

        vfs = os.fstatvfs(fd)
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if vfs.f_bavail == 0 or (limit != resource.RLIM_INFINITY and st.st_size >= limit):
            return True
    try:
        sys.stdout.flush()
    except OSError:
        return True
    return False


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail a second time."""
    import os

    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):  # a test runner's captured stdout has no fd
        pass


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
    eval_cmd,
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
    code = 0
    try:
        app()
    except SystemExit as e:
        code = e.code
    try:  # what is still buffered (stdout redirected to a file is flushed only here)
        sys.stdout.flush()
    except OSError as e:
        out = _output_failed(e)
        if out is None:
            raise
        code = code or out
    sys.exit(code)
