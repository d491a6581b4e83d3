"""The training workflow every face shares: a run directory owned for the whole run.

``train_run(cfg)`` (exported as ``lminspect.train.train``) is what ``lminspect train``, the REPL
and session scripts call: it holds the run dir's lock (``runlock``; a second process gets one
line naming the holder), clears a dead run's temporaries, refuses ``--resume`` settings that
contradict the saved run, removes a run refused before its first step, then runs the loop
(``train.loop.train``, which owns nothing on disk but its run). ``batch_stage`` says what the
``--run-root`` batch does with one run (skip it, resume it, start it); ``is_finished`` is "has
this run done what is asked". Under torchrun only rank 0 owns the directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lminspect.distributed import is_main
from lminspect.errors import UserError
from lminspect.train.loop import TrainConfig, TrainResult
from lminspect.train.loop import train as train_loop


def run_dir_of(cfg: TrainConfig) -> Path:
    """The directory a config trains into (``runs/EXP`` by default)."""
    return Path(cfg.run_dir or Path("runs") / cfg.exp)


def given_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The fields of ``cfg`` set away from their defaults: what a library caller asked for (the
    CLI passes the flags the user typed instead)."""
    out = {}
    for f in dataclasses.fields(cfg):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        value = getattr(cfg, f.name)
        if value != default:
            out[f.name] = value
    return out


@contextlib.contextmanager
def owned_run_dir(cfg: TrainConfig, run_dir: Path, given: dict[str, Any] | None = None) -> Iterator[None]:
    """Hold the run dir's lock (rank 0), clear a dead run's temporaries, and on resume refuse
    settings (``given``: by default those away from their defaults) that contradict the saved run."""
    from lminspect.runlock import run_dir_lock
    from lminspect.train.guard import read_saved_config, remove_leftovers, resume_conflicts

    if not is_main():
        yield
        return
    if not cfg.resume:
        from lminspect.train.guard import validate_train_config

        validate_train_config(cfg)  # before the lock creates the folder
    created = not run_dir.exists()
    with run_dir_lock(run_dir):
        remove_leftovers(run_dir)
        if cfg.resume:
            bad = resume_conflicts(given_settings(cfg) if given is None else given, read_saved_config(run_dir))
            if bad:
                raise UserError(f"--resume: {', '.join(bad)} contradict(s) the saved run; --resume may change "
                                "only --max-steps, --max-tokens and --device (start a new --run-dir instead)")
        try:
            yield
        except UserError:
            if created:  # refused before its first step (bad data, say): leave no half-made run behind
                remove_unstarted_run(run_dir)
            raise


def remove_unstarted_run(run_dir: Path) -> None:
    """The config.json and empty stats.jsonl of a run that never took a step (the lock's exit then
    removes the folder it created)."""
    from lminspect.rundir import has_started

    if (run_dir / "checkpoints").exists() or has_started(run_dir):
        return
    for name in ("config.json", "stats.jsonl"):
        (run_dir / name).unlink(missing_ok=True)


def train_run(cfg: TrainConfig, on_step: Callable[[dict[str, Any]], None] | None = None, *,
              given: dict[str, Any] | None = None) -> TrainResult:
    """Train (or resume) one run in its own run directory: ``owned_run_dir`` around the loop.

    ``on_step`` as ``train.loop.train``; ``given``: the settings the user chose (the CLI's typed
    flags), checked against the saved run on resume."""
    with owned_run_dir(cfg, run_dir_of(cfg), given):
        return train_loop(cfg, on_step)


def is_finished(run_dir: Path, *, max_steps: int | None = None, max_tokens: int | None = None) -> bool:
    """Done, and as far as asked: a larger ``max_steps`` / ``max_tokens`` resumes a finished run."""
    from lminspect.train.runlog import load_run

    run = load_run(run_dir)
    if run.status != "done" or not len(run):
        return False
    last = run.last
    if max_steps and last.get("step", 0) < max_steps:
        return False
    return not (max_tokens and last.get("tokens", 0) < max_tokens)


def batch_stage(run_dir: Path, *, max_steps: int | None = None, max_tokens: int | None = None) -> str:
    """What the ``--run-root`` batch does with one run: ``"finished"`` (skip), ``"resume"`` (a
    started run; a damaged one is one line here, before anything else) or ``"new"``."""
    from lminspect.rundir import has_started
    from lminspect.train.guard import read_saved_config

    if not has_started(run_dir):
        return "new"
    if is_finished(run_dir, max_steps=max_steps, max_tokens=max_tokens):
        return "finished"
    read_saved_config(run_dir)
    return "resume"


__all__ = ["batch_stage", "given_settings", "is_finished", "owned_run_dir", "remove_unstarted_run", "run_dir_of",
           "train_run"]
