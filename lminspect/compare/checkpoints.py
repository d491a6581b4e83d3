"""Finding a run's checkpoints, and opening a model reference that may be a run directory.

A run directory (``lminspect train --run-dir``) holds ``checkpoints/step_NNNNNNN/`` model
directories (see ``train/checkpoint.py``); comparisons open them like any model. ``RUN`` stands
for its newest checkpoint, ``RUN@STEP`` (or ``RUN@first`` / ``RUN@last``) for one of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lminspect.errors import UserError

_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    """One saved checkpoint: its step, directory and the tokens seen by then (None if unknown)."""

    step: int
    path: Path
    tokens: int | None = None


def _tokens_by_step(run_dir: Path) -> dict[int, int]:
    """step -> tokens from the run's stats.jsonl (empty when it has none)."""
    from lminspect.train.runlog import read_stats

    out = {}
    for row in read_stats(run_dir / "stats.jsonl"):
        if isinstance(row.get("step"), int) and isinstance(row.get("tokens"), int | float):
            out[row["step"]] = int(row["tokens"])
    return out


def list_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """The run's complete checkpoints (with weights), oldest first; an error if there are none."""
    run = Path(run_dir)
    ckdir = run / "checkpoints"
    if not ckdir.is_dir():
        raise UserError(f"{run_dir}: not a run directory with checkpoints (no {ckdir.name}/ folder)")
    found = []
    for p in ckdir.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / "model.safetensors").is_file():
            found.append((int(m.group(1)), p))
    if not found:
        raise UserError(f"{ckdir}: no checkpoints with model.safetensors")
    tokens = _tokens_by_step(run)
    return [Checkpoint(s, p, tokens.get(s)) for s, p in sorted(found)]


def is_run_dir(path: Path) -> bool:
    """A run with checkpoints (``train.runlog.is_run_dir``), or a bare folder of checkpoints (no
    config.json of a model of its own): the same rule as ``grow.io.resolve_model_dir``."""
    from lminspect.train.runlog import is_run_dir as run_log_dir

    return (path / "checkpoints").is_dir() and (run_log_dir(path) or not (path / "config.json").is_file())


def pick_checkpoint(run_dir: Path, which: str | None) -> Checkpoint:
    """``which``: None / ``last`` (the newest), ``first``, or a step number."""
    if which is not None and not which.strip():
        raise UserError(f"{run_dir}@: nothing after the '@'; say a step number, first or last (or drop the '@')")
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
    if path.is_dir() and is_run_dir(path):
        return str(pick_checkpoint(path, which).path)
    if at:
        raise UserError(f"{s}: {base} is not a run directory with checkpoints")
    return ref


def open_ref(ref: str | Any) -> Any:
    """A TensorStore for a model reference (see :func:`resolve_ref`)."""
    from lminspect.weights import open_store

    return open_store(resolve_ref(ref))
