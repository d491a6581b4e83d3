"""Scripted REPL sessions (``sessions/*.py``): finding, listing, running them, and their shared helpers.

A session is a plain Python script that reproduces one seed workflow with ``import lminspect
as li``. It calls :func:`session` first, which decides where outputs go and whether to run in
quick mode, and then writes every result through the returned :class:`Session`, which records
each file in ``manifest.json`` (so tests can check that promised outputs exist).

- Output folder: ``--out DIR`` on the script's command line, else
  ``$LMINSPECT_SESSIONS_OUT/<name>``, else ``results/sessions/<name>`` (relative to the cwd).
- Quick mode: ``--quick`` or ``LMINSPECT_QUICK=1``: a tiny random model
  (:func:`lminspect.api.quick_model`) and tiny data, so the script runs in seconds.
"""

from __future__ import annotations

import ast
import json
import os
import re
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lminspect.errors import UserError

ENV_QUICK = "LMINSPECT_QUICK"
ENV_OUT = "LMINSPECT_SESSIONS_OUT"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def is_quick() -> bool:
    return os.environ.get(ENV_QUICK, "").strip().lower() not in ("", "0", "false", "no")


class Session:
    """Where one session writes, and helpers that write tables, text, JSON and arrays there."""

    def __init__(self, name: str, out: Path, quick: bool, args: list[str]) -> None:
        self.name, self.out, self.quick, self.args = name, out, quick, args
        self.files: list[str] = []
        out.mkdir(parents=True, exist_ok=True)

    def path(self, fname: str) -> Path:
        p = self.out / fname
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def _record(self, fname: str) -> Path:
        if fname not in self.files:
            self.files.append(fname)
        self._write_manifest()
        return self.out / fname

    def _write_manifest(self) -> None:
        from lminspect.fsutil import atomic_write_text

        atomic_write_text(self.out / "manifest.json", json.dumps(
            {"session": self.name, "quick": self.quick, "files": self.files}, indent=1) + "\n")

    def write_text(self, fname: str, text: str) -> Path:
        from lminspect.fsutil import atomic_write_text

        atomic_write_text(self.path(fname), str(text).rstrip("\n") + "\n")
        return self._record(fname)

    def write_json(self, fname: str, obj: Any) -> Path:
        from lminspect.api.table import _json_default

        return self.write_text(fname, json.dumps(obj, indent=1, default=_json_default))

    def write_table(self, stem: str, table: Any) -> Path:
        """``stem.txt`` (as printed), ``stem.csv`` and ``stem.json`` (list of row dicts)."""
        self.write_text(f"{stem}.txt", table.text(max_rows=None))
        table.to_csv(self.path(f"{stem}.csv"))
        self._record(f"{stem}.csv")
        table.to_json(self.path(f"{stem}.json"))
        return self._record(f"{stem}.json")

    def save_npy(self, fname: str, arr: Any) -> Path:
        import numpy as np

        from lminspect.fsutil import atomic_path

        with atomic_path(self.path(fname)) as tmp, open(tmp, "wb") as f:
            np.save(f, np.asarray(arr))
        return self._record(fname)

    def plot_lines(self, fname: str, series: dict[str, Any], *, title: str = "", xlabel: str = "",
                   xs: Sequence[float] | None = None, width: int = 100, height: int = 25) -> Path:
        """A plotext line plot (plain text) of ``{label: ys}`` (or ``{label: (xs, ys)}``)."""
        from lminspect.plots import lines_figure

        return self.write_text(fname, lines_figure(series, title=title, xlabel=xlabel, xs=xs, width=width,
                                                   height=height))

    def plot_bars(self, fname: str, labels: Sequence[str], values: Sequence[float], *, title: str = "",
                  width: int = 100, height: int = 25) -> Path:
        """A horizontal plotext bar chart (plain text)."""
        import plotext as plt

        plt.clear_figure()
        plt.plotsize(width, height)
        plt.theme("clear")
        plt.bar([str(v) for v in labels], [float(v) for v in values], orientation="horizontal")
        plt.title(title)
        return self.write_text(fname, _ANSI.sub("", plt.build()))

    def quick_model(self) -> Path:
        """The tiny model for quick mode (built once into the output folder)."""
        from lminspect.api.quick import quick_model

        return quick_model(self.out / "_quick_model")

    def log(self, *msg: Any) -> None:
        print(f"[{self.name}]", *msg, flush=True)


def session(name: str, argv: Sequence[str] | None = None) -> Session:
    """Parse ``--out DIR`` / ``--quick`` from ``argv`` (default ``sys.argv[1:]``) and the env."""
    args = list(sys.argv[1:] if argv is None else argv)
    out: Path | None = None
    quick = is_quick()
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--quick":
            quick = True
        elif a == "--out" and i + 1 < len(args):
            out = Path(args[i + 1])
            i += 1
        elif a.startswith("--out="):
            out = Path(a.split("=", 1)[1])
        else:
            rest.append(a)
        i += 1
    if out is None:
        base = os.environ.get(ENV_OUT)
        out = Path(base) / name if base else Path("results") / "sessions" / name
    return Session(name, out, quick, rest)


# ---------------------------------------------------------------- finding and running scripts


def default_dir() -> Path:
    """``./sessions`` when it exists, else the ``sessions/`` folder beside the package (a checkout)."""
    here = Path("sessions")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent / "sessions"


def find_sessions(directory: str | Path | None = None) -> list[Path]:
    d = Path(directory) if directory is not None else default_dir()
    if not d.is_dir():
        raise UserError(f"{d}: no sessions folder")
    return sorted(p for p in d.glob("*.py") if not p.name.startswith("_"))


def summary(path: str | Path) -> str:
    """First line of a script's docstring, read without running it."""
    try:
        doc = ast.get_docstring(ast.parse(Path(path).read_text(encoding="utf-8")))
    except (OSError, SyntaxError, UnicodeDecodeError) as e:
        return f"(unreadable: {type(e).__name__})"
    return doc.strip().splitlines()[0] if doc else ""


def resolve(script: str | Path) -> Path:
    """A path, or a bare session name (``frankenllama``) looked up in the sessions folder."""
    p = Path(script)
    if p.is_file():
        return p
    # a bare name, or the README's sessions/NAME.py typed outside the checkout: the shipped script
    cand = default_dir() / (p.name if p.suffix == ".py" else f"{p.name}.py")
    if cand.is_file():
        return cand
    import difflib

    try:
        names = [s.stem for s in find_sessions()]
    except UserError:
        names = []
    near = difflib.get_close_matches(p.stem, names, n=1)
    hint = f"did you mean '{near[0]}'? " if near else ""
    raise UserError(f"{script}: no such session script ({hint}see `lminspect session list`)")


def run_session(script: str | Path, argv: Sequence[str] = (), quick: bool = False) -> None:
    """Run a session script in this process as ``__main__`` with ``argv`` (quick mode via the env)."""
    path = resolve(script)
    old_argv, old_quick = sys.argv, os.environ.get(ENV_QUICK)
    sys.argv = [str(path), *argv]
    if quick:
        os.environ[ENV_QUICK] = "1"
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as e:
        if e.code not in (None, 0):
            raise
    finally:
        sys.argv = old_argv
        if quick:
            if old_quick is None:
                os.environ.pop(ENV_QUICK, None)
            else:
                os.environ[ENV_QUICK] = old_quick
