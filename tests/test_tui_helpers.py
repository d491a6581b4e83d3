"""Helpers shared by the TUI tests (no tests here): waiting on app state, writing runs, collecting
activation statistics.

Every Pilot step waits for the condition it asserts (``wait_until``), never a fixed pause: a key's
effect lands a refresh or a worker later, and later still on a loaded machine."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from pathlib import Path

# generous: a worker's first numba compile or torch import takes tens of seconds on a loaded 2-core
# machine; a passing test never waits this long
TIMEOUT = 120.0


async def wait_until(pilot, cond: Callable[[], bool], timeout: float = TIMEOUT, what: str = "condition",
                     detail: Callable[[], object] | None = None) -> None:
    """Let the app run until ``cond()`` holds (workers post back asynchronously); past ``timeout``
    fail, saying ``what`` was awaited and ``detail()`` (what there is instead)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}" + (f": {detail()}" if detail else ""))
        await pilot.pause(0.05)


async def opened(pilot) -> None:
    """The model is open and its tree takes keys: focused, the cursor on the root (a key pressed
    before the tree has focus goes elsewhere)."""
    from textual.widgets import Tree

    app = pilot.app
    await wait_until(pilot, lambda: app.store is not None, what="the model to open")
    tree = app.query_one("#weights-tree", Tree)
    await wait_until(pilot, lambda: app.focused is tree and tree.cursor_node is tree.root,
                     what="the weights tree to take focus")


async def press_until(pilot, *keys: str, until: Callable[[], bool], what: str, timeout: float = TIMEOUT,
                      detail: Callable[[], object] | None = None) -> None:
    """Press ``keys`` and wait for their effect ``until()``."""
    await pilot.press(*keys)
    await wait_until(pilot, until, timeout=timeout, what=what, detail=detail)


async def palette_pick(pilot, query: str, expect: str | None = None) -> None:
    """Open the command palette, type ``query``, wait until the search for it has finished with a hit
    whose title contains ``expect`` (default: ``query``) highlighted, and press Enter."""
    from textual.command import CommandInput, CommandList, CommandPalette

    app = pilot.app
    await press_until(pilot, "ctrl+p", until=lambda: isinstance(app.screen, CommandPalette)
                      and isinstance(app.focused, CommandInput), what="the command palette")
    palette = app.screen
    field, hits = palette.query_one(CommandInput), palette.query_one(CommandList)
    await press_until(pilot, *query, until=lambda: field.value == query, what=f"{query!r} typed in the palette")
    want = (expect or query).lower()

    def ready() -> bool:
        searching = any(w.group == CommandPalette._GATHER_COMMANDS_GROUP and not w.is_finished for w in app.workers)
        return (not searching and hits.highlighted is not None
                and want in str(hits.get_option_at_index(hits.highlighted).prompt).splitlines()[0].lower())

    await wait_until(pilot, ready, what=f"the palette to offer {want!r}")
    await pilot.press("enter")


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


def screen_text(app) -> str:
    """The screen as plain text, one line per row, as a monochrome terminal shows it (no styles:
    what is left must carry the meaning)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())
