"""Learning-rate schedules: constant, warmup + cosine decay, warmup + linear decay.

The factor multiplies each parameter group's base lr (its lr when the optimizer was made,
kept in the group as ``base_lr`` so it survives a checkpoint and per-generation lrs of the
growing experiment keep their ratios). Warmup is linear from ``1/warmup`` to 1 over
``warmup_steps``; the decay then runs from 1 down to ``min_lr_ratio`` at the last step.
"""

from __future__ import annotations

import math
from typing import Any

from lminspect.errors import UserError

SCHEDULES = ("constant", "cosine", "linear")


def lr_factor(schedule: str, step: int, *, warmup: int = 0, total: int | None = None,
              min_ratio: float = 0.1) -> float:
    """The lr multiplier at optimizer ``step`` (1-based)."""
    if warmup > 0 and step <= warmup:
        return step / warmup
    if schedule == "constant":
        return 1.0
    if not total or total <= warmup:
        return 1.0
    t = min(1.0, (step - warmup) / (total - warmup))
    shape = 0.5 * (1 + math.cos(math.pi * t)) if schedule == "cosine" else 1.0 - t
    return min_ratio + (1.0 - min_ratio) * shape


def total_steps(cfg: Any) -> int | None:
    """The steps a decaying schedule spans: ``--max-steps``, else ``--max-tokens`` in steps."""
    if cfg.max_steps:
        return int(cfg.max_steps)
    if cfg.max_tokens:
        return max(1, int(cfg.max_tokens) // (cfg.batch_size * cfg.seq_len))
    return None


def check_schedule(cfg: Any) -> None:
    """One-line errors for a bad schedule before anything is built."""
    if cfg.lr_schedule not in SCHEDULES:
        raise UserError(f"--lr-schedule {cfg.lr_schedule!r}: choose {', '.join(SCHEDULES)}")
    if cfg.warmup_steps < 0:
        raise UserError(f"--warmup-steps must be >= 0, got {cfg.warmup_steps}")
    if not 0.0 <= cfg.min_lr_ratio <= 1.0:
        raise UserError(f"--min-lr-ratio must be between 0 and 1, got {cfg.min_lr_ratio}")
    if cfg.lr_schedule != "constant" and total_steps(cfg) is None:
        raise UserError(f"--lr-schedule {cfg.lr_schedule} decays over the run: give --max-steps or --max-tokens")


def apply_schedule(optimizer: Any, cfg: Any, step: int) -> None:
    """Set every param group's lr for optimizer ``step`` (1-based) from its ``base_lr``."""
    f = lr_factor(cfg.lr_schedule, step, warmup=cfg.warmup_steps, total=total_steps(cfg),
                  min_ratio=cfg.min_lr_ratio)
    for group in optimizer.param_groups:
        group.setdefault("base_lr", group["lr"])
        group["lr"] = group["base_lr"] * f
