"""Reading and writing a run directory's ``config.json`` and ``stats.jsonl``.

``stats.jsonl`` has one JSON object per optimizer step (rank 0 writes it):
``step, tokens, loss, acc, lr, grad_norm, tok_s, time, plan_step`` and, on steps where
validation ran, ``val_loss, val_acc``. :func:`load_run` turns it into columns for plots,
the TUI and the REPL.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lminspect.errors import UserError
from lminspect.rundir import (  # noqa: F401 - re-exported: the owner of these facts is rundir
    RUNNING_AFTER_S,
    is_run_dir,
    read_stats,
    read_stats_counted,
    run_state,
    run_status,
)


@dataclass
class Run:
    """One training run as columns. ``columns["loss"][i]`` belongs to ``columns["step"][i]``.

    Missing values (e.g. ``val_loss`` on steps without evaluation) are ``nan``.
    """

    path: Path
    name: str
    config: dict[str, Any]
    columns: dict[str, list[float]] = field(default_factory=dict)
    is_running: bool = False
    status: str = "unknown"  # "running" | "done" | "stopped" | "interrupted" | "failed" | "unknown"
    skipped: int = 0  # unreadable lines of stats.jsonl (binary or torn), left out
    nonfinite: dict[str, int] = field(default_factory=dict)  # NaN/inf values written per column

    def __len__(self) -> int:
        return len(self.columns.get("step", []))

    def series(self, metric: str, x: str = "tokens") -> tuple[list[float], list[float]]:
        """``(xs, ys)`` for ``metric`` with the rows where it is missing dropped."""
        if metric not in self.columns:
            known = ", ".join(k for k in self.columns if k not in ("step", "tokens"))
            raise UserError(f"run {self.name}: no metric {metric!r} (has: {known})")
        if x not in ("tokens", "step", "time", "flops"):
            raise UserError(f"x axis must be tokens, steps, time or flops, not {x!r}")
        if x not in self.columns:
            raise UserError(f"run {self.name}: no {x!r} column (runs before the FLOPs counter lack it)")
        xs, ys = [], []
        for xv, yv in zip(self.columns[x], self.columns[metric], strict=False):
            if yv is not None and math.isfinite(yv) and xv is not None and math.isfinite(xv):
                xs.append(xv)
                ys.append(yv)
        return xs, ys

    @property
    def tokens(self) -> float:
        t = self.columns.get("tokens") or [0]
        return t[-1]

    @property
    def last(self) -> dict[str, float]:
        return {k: v[-1] for k, v in self.columns.items() if v}


def load_run(path: str | Path) -> Run:
    """Read a run directory (``config.json`` + ``stats.jsonl``)."""
    p = Path(path)
    if p.is_file() and p.name in ("stats.jsonl", "config.json"):
        p = p.parent
    stats = p / "stats.jsonl"
    if not is_run_dir(p):
        from lminspect.fsutil import describe_kind

        what = describe_kind(stats)
        if what not in (None, "a file"):  # a FIFO where the log should be: say so, never wait on it
            raise UserError(f"{stats}: is {what}, not a regular file")
        raise UserError(f"{path}: not a run directory (no stats.jsonl / config.json)")
    config: dict[str, Any] = {}
    if (p / "config.json").is_file():
        try:
            from lminspect.fsutil import read_regular

            config = json.loads(read_regular(p / "config.json").decode("utf-8"))
        except UnicodeDecodeError as e:
            raise UserError(f"{p / 'config.json'}: not UTF-8 text (byte offset {e.start})") from None
        except (json.JSONDecodeError, RecursionError) as e:
            raise UserError(f"{p / 'config.json'}: not valid JSON ({e})") from None
        if not isinstance(config, dict):
            raise UserError(f"{p / 'config.json'}: not a JSON object")
    rows, skipped = read_stats_counted(stats)
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    columns = {k: [_num(r.get(k)) for r in rows] for k in keys}
    nonfinite = {k: n for k in keys if (n := sum(1 for r in rows if isinstance(r.get(k), float)
                                                   and not math.isfinite(r[k])))}
    status = run_status(p, config)
    running = status == "running"
    name = str(config.get("name") or p.name)
    return Run(p, name, config, columns, running, status, skipped, nonfinite)


def _num(v: Any) -> float:
    if v is None:
        return float("nan")
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


class StatsWriter:
    """Appends rows to ``stats.jsonl``, flushing each one so plots can follow a live run."""

    def __init__(self, path: Path, truncate_after_step: int | None = None) -> None:
        self.path = Path(path)
        if truncate_after_step is not None and self.path.exists():
            from lminspect.fsutil import atomic_write_text

            keep = [r for r in read_stats(self.path) if r.get("step", 0) <= truncate_after_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))
        self._f = self.path.open("a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _last_row(stats: Path) -> dict[str, Any]:
    """The last complete row of ``stats.jsonl``, reading only the file's tail."""
    from lminspect.fsutil import read_regular

    try:
        tail = read_regular(stats, tail=8192).decode("utf-8", errors="replace").splitlines()
    except (OSError, UserError):  # missing, or a FIFO: a list of runs shows nothing for it
        return {}
    for line in reversed(tail):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written, or cut by the tail
        if isinstance(row, dict):
            return row
    return {}


def run_summary(path: str | Path) -> dict[str, Any]:
    """What a list of runs shows without reading whole logs: name, experiment, steps done, last
    loss and status in words (running / finished / stopped / failed)."""
    p = Path(path)
    try:
        from lminspect.fsutil import read_regular

        config = json.loads(read_regular(p / "config.json").decode("utf-8"))
    except (OSError, ValueError, RecursionError, UserError):
        config = {}
    last = _last_row(p / "stats.jsonl")
    return {"name": config.get("name") or p.name, "exp": config.get("experiment") or config.get("exp") or "?",
            "steps": int(last.get("step", 0) or 0), "loss": last.get("loss"),
            "status": run_state(p, config if isinstance(config, dict) else {})}
