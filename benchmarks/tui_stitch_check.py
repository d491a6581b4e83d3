"""Manual check: the TUI's Stitch tab on a big model (the 7B-shaped Q4_K_M GGUF of
bench_big_workflows.py), driven by textual's Pilot: plan 0-31,31, 3 tokens; prints the status
line, the wall time and the peak RSS.

Run: ``flock /tmp/big.lock python benchmarks/tui_stitch_check.py /tmp/lminspect-bench-big/llama7b-32L-q4km.gguf``
"""
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_tui_helpers import opened, press_until, wait_until  # noqa: E402
from textual.widgets import Input, Static  # noqa: E402

from lminspect.tui.app import LMInspectApp  # noqa: E402


async def main(path):
    t0 = time.perf_counter()
    app = LMInspectApp(path, runs_dir=Path(tempfile.mkdtemp()) / "runs", remember=False)
    async with app.run_test(size=(160, 50)) as pilot:
        await opened(pilot)
        plan = app.query_one("#plan-input", Input)
        await press_until(pilot, "s", until=lambda: app.focused is plan, what="plan")
        await press_until(pilot, *"0-31,31", until=lambda: plan.value == "0-31,31", what="typed")
        app.query_one("#max-tokens", Input).value = "3"
        status = app.query_one("#gen-status", Static)
        await pilot.press("enter")
        await wait_until(pilot, lambda: "done" in str(status.render()), what="end",
                         detail=lambda: str(status.render()), timeout=1200)
        print("STATUS", str(status.render()))
        print("OUT", app.query_one("#out-plan").text[:80])
    print("WALL", time.perf_counter() - t0, "MAXRSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)

if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
