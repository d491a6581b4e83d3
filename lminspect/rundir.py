"""What a training run directory is: the one owner every command, the REPL and the TUI ask.

A run directory (``lminspect train --run-dir``) holds ``config.json`` (the run's settings and
``status``), ``stats.jsonl`` (one row per step) and ``checkpoints/step_NNNNNNN/`` folders (see
``train/checkpoint.py`` for what one holds). Here:

- ``is_run_dir``: is this a run? ``holds_checkpoints``: does this folder stand for a checkpoint
  wherever a model is expected (a run with ``checkpoints/``, or a bare folder of checkpoints)?
- ``checkpoint_problem``: the one definition of a complete checkpoint (every file present,
  safetensors headers readable); ``latest_checkpoint`` / ``list_checkpoints`` see only complete
  ones, so ``RUN``, ``RUN@last`` and ``--resume`` agree on which one is the newest.
- ``resolve_ref``: ``RUN`` / ``RUN@STEP`` / ``RUN@first`` / ``RUN@last`` -> a checkpoint folder.
- ``run_state``: running / finished / stopped / failed; ``run_dir_lock`` (``runlock``): one
  process per run directory.
"""

from __future__ import annotations

import json
import re
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lminspect.errors import UserError
from lminspect.fsutil import read_regular
from lminspect.runlock import LOCK_NAME, run_dir_lock

RUNNING_AFTER_S = 120.0  # a run whose stats changed this recently (and that has no "done") is live
CHECKPOINT_FILES = ("model.safetensors", "config.json", "trainer.safetensors")
STATE_WORDS = {"done": "finished", "interrupted": "stopped", "failed": "failed", "running": "running"}
_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    """One saved checkpoint: its step, directory and the tokens seen by then (None if unknown)."""

    step: int
    path: Path
    tokens: int | None = None


def is_run_dir(path: str | Path) -> bool:
    """The one rule for "is this a training run directory?" (REPL, TUI, plots, grow all ask here).

    A run writes ``stats.jsonl`` when it starts; a folder with ``config.json`` and ``checkpoints/``
    (a copied run without its log) counts too. A model directory's ``config.json`` alone does not.
    """
    p = Path(path)
    return p.is_dir() and ((p / "stats.jsonl").is_file()
                           or ((p / "config.json").is_file() and (p / "checkpoints").is_dir()))


def find_runs(root: str | Path, depth: int = 3) -> list[tuple[Path, str]]:
    """The runs under ``root`` (itself, or folders up to ``depth`` levels down: a ``--run-root``
    batch keeps its runs one level below), in name order, each with its label: the path from
    ``root`` (``cmp/gpt2ish``, so two batches' ``base`` runs stay apart), or the run's own folder
    name when ``root`` is the run. The REPL's ``li.runs``, ``plot`` and the TUI's Runs tab ask here."""
    root = Path(root)
    if is_run_dir(root):
        return [(root, root.resolve().name or str(root))]

    def walk(d: Path, left: int) -> list[Path]:
        if is_run_dir(d):
            return [d]
        if left == 0 or not d.is_dir():
            return []
        try:
            children = sorted(c for c in d.iterdir() if c.is_dir() and not c.name.startswith("."))
        except OSError:  # unreadable folder: nothing to list there
            return []
        return [r for c in children for r in walk(c, left - 1)]

    return [(p, p.relative_to(root).as_posix()) for p in walk(root, depth)]


def has_started(path: str | Path) -> bool:
    """Whether a run took its first step here (a non-empty ``stats.jsonl``): a new run refuses
    such a folder, the ``--run-root`` batch resumes it."""
    stats = Path(path) / "stats.jsonl"
    return stats.is_file() and stats.stat().st_size > 0


def holds_checkpoints(path: str | Path) -> bool:
    """Whether ``path`` means a checkpoint wherever a model is expected: a run with
    ``checkpoints/``, or a bare folder of checkpoints (no config.json of a model of its own)."""
    p = Path(path)
    return (p / "checkpoints").is_dir() and (is_run_dir(p) or not (p / "config.json").is_file())


def checkpoint_problem(path: Path, *, resumable: bool = True) -> str | None:
    """Why ``path`` is not a complete checkpoint (a missing file, an unreadable or cut safetensors
    header), or None. ``resumable=False`` asks only for the model (``model.safetensors`` and
    ``config.json``: what opening ``RUN`` reads); training's ``--resume`` needs ``trainer.safetensors`` too."""
    files = CHECKPOINT_FILES if resumable else CHECKPOINT_FILES[:2]
    for fname in files:
        if not (path / fname).is_file():
            return f"no {fname}"
    for fname in (f for f in files if f.endswith(".safetensors")):
        f = path / fname
        try:
            with open(f, "rb") as fh:
                head = fh.read(8)
                if len(head) < 8:
                    return f"{fname} is truncated"
                (n,) = struct.unpack("<Q", head)
                size = f.stat().st_size
                if n > size - 8:
                    return f"{fname} is truncated"
                header = json.loads(fh.read(n))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
            if 8 + n + end > size:
                return f"{fname} is truncated"
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError) as e:
            return f"{fname} is unreadable ({type(e).__name__})"
    try:  # the model's config is what a resume and an open read first: garbage there is damage too
        cfg = json.loads(read_regular(path / "config.json", limit=1 << 20).decode("utf-8"))
    except (OSError, ValueError, RecursionError, UserError):
        return "config.json is not readable JSON"
    if not isinstance(cfg, dict):
        return "config.json is not a JSON object"
    return None


def checkpoint_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every ``checkpoints/step_*`` folder, complete or not, oldest first."""
    ckdir = Path(run_dir) / "checkpoints"
    if not ckdir.is_dir():
        return []
    found = []
    for p in ckdir.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and not p.is_symlink():
            found.append((int(m.group(1)), p))
    return sorted(found)


def _warn_latest_pointer(ckdir: Path) -> None:
    latest = ckdir / "latest"
    if not (latest.exists() or latest.is_symlink()):
        return
    try:
        named = read_regular(latest, limit=4096).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError, UserError):
        named = ""
    target = ckdir / named
    inside = named.startswith("step_") and "/" not in named and "\\" not in named and not latest.is_symlink()
    if not inside or not target.resolve().is_relative_to(ckdir.resolve()):
        print(f"lminspect: warning: {latest} names {named[:80]!r}, not a checkpoint of this run; ignored",
              file=sys.stderr)


def latest_checkpoint(run_dir: Path, *, warn: bool = False, resumable: bool = True) -> Path | None:
    """The newest complete checkpoint of ``run_dir`` (``checkpoint_problem`` is None; ``resumable``
    as there: ``--resume`` needs the trainer state, opening the model does not).

    ``checkpoints/latest`` is only trusted when it names a ``step_*`` folder inside the run dir.
    A damaged newest checkpoint is skipped for an older complete one; ``warn`` prints one line
    saying so (resume uses it).
    """
    ckdir = Path(run_dir) / "checkpoints"
    if not ckdir.is_dir():
        return None
    if warn:
        _warn_latest_pointer(ckdir)
    cands = [p for _, p in reversed(checkpoint_dirs(run_dir))]
    for k, p in enumerate(cands):
        problem = checkpoint_problem(p, resumable=resumable)
        if problem is None:
            return p
        if warn:
            nxt = next((c.name for c in cands[k + 1:] if checkpoint_problem(c, resumable=resumable) is None), None)
            then = f"falling back to {nxt}" if nxt else "no older complete checkpoint"
            print(f"lminspect: warning: checkpoint {p} is damaged ({problem}); {then}", file=sys.stderr)
    return None


def run_checkpoint(path: str | Path) -> Path | None:
    """What a run directory means wherever a model is expected: its latest complete checkpoint
    (None when ``path`` does not hold checkpoints: a model folder, a file). A run without a
    complete checkpoint is a ``UserError``."""
    p = Path(path)
    if not holds_checkpoints(p):
        return None
    ck = latest_checkpoint(p, resumable=False)
    if ck is None:
        raise UserError(f"{path}: run directory without a complete checkpoint (nothing in {p / 'checkpoints'})")
    return ck


def read_stats_counted(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The rows of ``stats.jsonl`` and how many lines were unreadable (binary, torn, not an object).

    The last line may be one being written right now; it is skipped without being counted."""
    rows: list[dict[str, Any]] = []
    try:
        lines = read_regular(path).splitlines()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return [], 0
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror})") from None
    bad = 0
    for k, raw in enumerate(lines):
        raw = raw.strip()
        if not raw:
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif k != len(lines) - 1:
            bad += 1
    return rows, bad


def read_stats(path: Path) -> list[dict[str, Any]]:
    return read_stats_counted(path)[0]


def list_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """The run's complete checkpoints (as models: the rule ``open_store(RUN)`` uses, so ``RUN@last``
    is the checkpoint ``RUN`` opens), oldest first, with the tokens seen from stats.jsonl; an error
    if there are none."""
    run = Path(run_dir)
    ckdir = run / "checkpoints"
    if not ckdir.is_dir():
        raise UserError(f"{run_dir}: not a run directory with checkpoints (no {ckdir.name}/ folder)")
    found = [(s, p) for s, p in checkpoint_dirs(run) if checkpoint_problem(p, resumable=False) is None]
    if not found:
        raise UserError(f"{ckdir}: no complete checkpoints (readable model.safetensors and config.json)")
    tokens = {r["step"]: int(r["tokens"]) for r in read_stats(run / "stats.jsonl")
              if isinstance(r.get("step"), int) and isinstance(r.get("tokens"), int | float)}
    return [Checkpoint(s, p, tokens.get(s)) for s, p in found]


def pick_checkpoint(run_dir: Path, which: str | None) -> Checkpoint:
    """``which``: None / ``last`` (the newest complete), ``first``, or a step number."""
    if which is not None and not which.strip():
        raise UserError(f"{run_dir}@: nothing after the '@'; say a step number, first or last")
    cks = list_checkpoints(run_dir)
    if which in (None, "last", "latest"):
        return cks[-1]
    if which == "first":
        return cks[0]
    try:
        step = int(which)
    except ValueError:
        raise UserError(f"{run_dir}@{which}: say a step number, first or last") from None
    for c in cks:
        if c.step == step:
            return c
    raise UserError(f"{run_dir}@{which}: no checkpoint at step {step} "
                    f"(have: {', '.join(str(c.step) for c in cks)})")


def resolve_ref(ref: str | Any) -> Any:
    """What ``lminspect.open`` / ``open_store`` accepts, with ``RUN`` and ``RUN@STEP`` mapped to
    the checkpoint directory; anything else is returned unchanged."""
    if not isinstance(ref, str | Path):
        return ref
    s = str(ref)
    base, at, which = s.rpartition("@") if "@" in s else (s, "", None)
    path = Path(base if at else s).expanduser()
    if at and not path.is_dir():
        return ref  # an '@' that belongs to the name
    if path.is_dir() and holds_checkpoints(path):
        return str(pick_checkpoint(path, which).path)
    if at:
        raise UserError(f"{s}: {base} is not a run directory with checkpoints")
    return ref


def run_status(path: str | Path, config: dict[str, Any] | None = None) -> str:
    """The status config.json records (done / interrupted / failed / running / unknown), except that
    a "running" run whose stats have not changed for ``RUNNING_AFTER_S`` died: "stopped"."""
    p = Path(path)
    if config is None:
        try:
            config = json.loads(read_regular(p / "config.json").decode("utf-8"))
        except (OSError, ValueError, RecursionError, UserError):
            config = {}
    status = str((config if isinstance(config, dict) else {}).get("status", "unknown"))
    if status == "running":
        stats = p / "stats.jsonl"
        mtime = stats.stat().st_mtime if stats.is_file() else 0.0
        status = "running" if time.time() - mtime < RUNNING_AFTER_S else "stopped"
    return status


def run_state(path: str | Path, config: dict[str, Any] | None = None) -> str:
    """The run's state in the words lists show: running / finished / stopped / failed."""
    status = run_status(path, config)
    return STATE_WORDS.get(status, status)


__all__ = [
    "CHECKPOINT_FILES", "LOCK_NAME", "Checkpoint", "checkpoint_dirs", "checkpoint_problem", "has_started",
    "holds_checkpoints", "is_run_dir",
    "latest_checkpoint", "list_checkpoints", "pick_checkpoint", "read_stats", "read_stats_counted",
    "resolve_ref", "run_checkpoint", "run_dir_lock", "run_state", "run_status",
]
