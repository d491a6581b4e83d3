"""Latency of the TUI on the real SmolLM2 (headless, ``App.run_test``).

Measures, on ``embed.tokens.weight`` (49152 x 576):
  * select -> first paint of the tensor view (header with name/shape/dtype/size);
  * select -> statistics table shown, first time (fresh stats cache) and cached;
and for generation, Run -> first streamed token painted, against the engine's own
TTFT for the same generation (``Generation.stats.ttft_s``), first run (includes
the lazy model load) and second run (model already loaded).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_tui.py

Targets: first paint < 300 ms, cached stats < 50 ms, first token within 1.5x TTFT.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

TENSOR = "embed.tokens.weight"


async def _wait(pilot, cond, timeout=600.0):
    end = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > end:
            raise TimeoutError("benchmark step timed out")
        await pilot.pause(0.002)


async def bench(model_path: str) -> dict[str, float]:
    from lminspect.tui.app import LMInspectApp
    from lminspect.tui.widgets.stitch import StitchPane
    from lminspect.tui.widgets.weights import WeightsPane

    out: dict[str, float] = {}
    t_start = time.perf_counter()
    app = LMInspectApp(model_path, runs_dir="runs", remember=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await _wait(pilot, lambda: app.store is not None)
        out["open_to_tree_ms"] = (time.perf_counter() - t_start) * 1000
        pane = app.query_one(WeightsPane)

        async def select(name: str) -> dict[str, float]:
            t0 = time.perf_counter()
            pane.show_tensor(name)
            out[f"sync_{name}_ms"] = (time.perf_counter() - t0) * 1000
            await _wait(pilot, lambda: "painted" in pane.timings)
            await _wait(pilot, lambda: "stats" in pane.timings)
            t = pane.timings
            return {"paint": (t["painted"] - t["selected"]) * 1000, "stats": (t["stats"] - t["selected"]) * 1000}

        first = await select(TENSOR)
        out["first_paint_ms"] = first["paint"]
        out["first_stats_ms"] = first["stats"]
        await select("norm.weight")
        cached = await select(TENSOR)
        out["cached_sync_ms"] = out.pop(f"sync_{TENSOR}_ms")
        out.pop("sync_norm.weight_ms", None)
        out["cached_paint_ms"] = cached["paint"]
        out["cached_stats_ms"] = cached["stats"]

        await pilot.press("s")
        stitch = app.query_one(StitchPane)
        app.query_one("#max-tokens").value = "16"
        for label in ("run1", "run2"):
            await pilot.press("ctrl+r")
            await _wait(pilot, lambda: "first_paint" in stitch.timings)
            await _wait(pilot, lambda: not app.query_one("#run").disabled)
            t = stitch.timings
            out[f"{label}_first_token_ms"] = (t["first_paint"] - t["run_pressed"]) * 1000
            out[f"{label}_engine_ttft_ms"] = stitch.last_stats[-1].ttft_s * 1000
            out[f"{label}_tok_s"] = stitch.last_stats[-1].tokens_per_s
    return out


def main() -> None:
    from lminspect.weights.fetch import fetch

    model = str(fetch("smollm2").hf_dir)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["LMINSPECT_CACHE"] = cache  # fresh statistics cache: "first time" is real
        res = asyncio.run(bench(model))
    print(f"model: {model}")
    for k, v in res.items():
        print(f"{k:28s} {v:10.1f}")
    ratio = res["run2_first_token_ms"] / max(res["run2_engine_ttft_ms"], 1e-9)
    print(f"{'run2 first token / TTFT':28s} {ratio:10.2f}x")


if __name__ == "__main__":
    main()
