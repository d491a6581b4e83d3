"""Helpers shared by the TUI tests (no tests here): waiting on app state, writing runs, collecting
activation statistics."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from pathlib import Path


async def wait_until(pilot, cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Let the app run until ``cond()`` holds (workers post back asynchronously)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def write_run(run_dir: Path, *, steps: int = 40, offset: float = 0.0, name: str | None = None,
              status: str = "done") -> Path:
    """A run directory in the documented format (config.json + stats.jsonl), deterministic."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"name": name or run_dir.name, "exp": "gpt2ish", "status": status}
    (run_dir / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    rows = []
    for s in range(1, steps + 1):
        loss = 5.5 * math.exp(-s / 15) + 2.0 + offset + 0.05 * math.sin(s)
        acc = 0.6 - 0.5 * math.exp(-s / 12) - offset / 10
        row = {"step": s, "tokens": s * 128, "loss": round(loss, 6), "acc": round(acc, 6),
               "lr": 3e-3, "grad_norm": 1.0, "tok_s": 1000.0, "time": s * 0.1, "plan_step": 0}
        rows.append(json.dumps(row))
    (run_dir / "stats.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return run_dir


def make_acts(model_dir: Path, out: Path, **kw):
    """A real activations results dir of ``model_dir``: the collector on the builtin corpus, 256 tokens
    (well under a second on the tiny models). Returns the ``ActivationStats``."""
    from lminspect.activations import collect

    kw = {"tokens": 256, "seq_len": 32, "batch_size": 4, "progress": False, **kw}
    return collect(str(model_dir), out, **kw)
