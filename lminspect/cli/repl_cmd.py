"""``lminspect repl [MODEL]`` and ``lminspect session list|run``: the Python API, interactive or scripted.

Module level imports only typer (see lminspect/cli/__init__.py); the API loads on use.
"""

from __future__ import annotations

from typing import Any

import typer

from lminspect.cli.threads import Threads

PANEL = "Python"

session_app = typer.Typer(help="Scripted REPL sessions: one runnable script per seed workflow.",
                          no_args_is_help=True)

BANNER = """lminspect {version} REPL: `li` is lminspect{model_line}.
  li.open(ref)  li.runs(dir)  li.experiments()  help(li.Model)   (docs/api.md)"""


def repl(
    model: str = typer.Argument(None, help="Model to open as `m` (fetched name, path, or hf:ORG/NAME)."),
    plain: bool = typer.Option(False, "--plain", help="Use Python's code.interact even if IPython is installed."),
) -> None:
    """Open a Python REPL with `li` imported and MODEL opened as `m` (IPython when installed).

    Example: lminspect repl smollm2
    """
    import sys

    import lminspect as li

    ns: dict = {"li": li, "lminspect": li}
    model_line = ""
    if model:
        ns["m"] = li.open(model)
        model_line = f", `m` is {ns['m'].name}"
    banner = BANNER.format(version=li.__version__, model_line=model_line)
    if not plain and sys.stdin.isatty():
        try:
            import IPython
        except ImportError:
            IPython = None  # noqa: N806
        if IPython is not None:
            from traitlets.config import Config

            cfg = Config()
            cfg.TerminalInteractiveShell.banner2 = banner
            IPython.start_ipython(argv=[], user_ns=ns, config=cfg)
            return
    import code

    from lminspect.errors import UserError

    def one_line(tp: type, val: BaseException, tb: Any) -> None:
        """User errors print one line (as in the CLI); anything else keeps its traceback."""
        if isinstance(val, UserError):
            print(val.one_line(), file=sys.stderr)
        else:
            import traceback

            traceback.print_exception(tp, val, getattr(tb, "tb_next", None) or tb)  # without code.py's frame

    old_hook, sys.excepthook = sys.excepthook, one_line
    try:
        code.interact(banner=banner, local=ns, exitmsg="")
    finally:
        sys.excepthook = old_hook


def session_list(
    directory: str = typer.Option(None, "--dir", help="Sessions folder (default ./sessions)."),
) -> None:
    """List the scripted sessions (one per user workflow) with what each does.

    Example: lminspect session list
    """
    from rich.console import Console
    from rich.table import Table

    from lminspect.sessions_runner import find_sessions, summary

    t = Table(show_header=True, header_style="bold", box=None)
    t.add_column("session")
    t.add_column("what")
    for p in find_sessions(directory):
        from rich.markup import escape

        t.add_row(escape(p.stem), escape(summary(p)))
    Console().print(t)


def session_run(
    ctx: typer.Context,
    script: str = typer.Argument(..., help="sessions/NAME.py or just NAME."),
    quick: bool = typer.Option(False, "--quick", help="Tiny model and data (sets LMINSPECT_QUICK=1)."),
    out: str = typer.Option(None, "--out", "-o", help="Output folder (default results/sessions/NAME); a non-empty "
                                                "folder that is not a session's needs --overwrite."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into a non-empty --out folder."),
    threads: Threads = None,
) -> None:
    """Run one session script; extra arguments are passed to it.

    Example: lminspect session run sessions/frankenllama.py --quick --threads 1
    """
    import sys
    import time

    from lminspect.runtime import interrupted, run_summary, set_threads
    from lminspect.sessions_runner import run_session

    n_threads = set_threads(threads)

    argv = list(ctx.args)
    if out:
        from pathlib import Path

        from lminspect.fsutil import check_output

        ours = (Path(out) / "manifest.json").is_file()  # an earlier session's results: rewritten in place
        check_output(out, kind="dir", overwrite=overwrite or ours, inputs=(script,))
        argv = ["--out", out, *argv]
    where = out or "the session's output folder (default results/sessions/NAME)"
    t0 = time.perf_counter()
    with interrupted(lambda: f"the results it finished are in {where}, listed in its manifest.json"):
        run_session(script, argv, quick=quick)
    print(run_summary(f"session {script}", n_threads, t0), file=sys.stderr)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("repl", rich_help_panel=PANEL)(repl)
    session_app.command("list")(session_list)
    session_app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
        session_run)
    app.add_typer(session_app, name="session", rich_help_panel=PANEL)
