"""Benchmark: opening a 2 GB safetensors file, and the full statistics scan.

Compares, in one run on the same file:
- open: lminspect ``open_store`` vs ``safetensors.torch.load_file`` vs a header-only parse
  (read 8 bytes + json.loads): wall time and peak-RSS growth, each in a fresh subprocess
  (VmHWM from /proc/self/status), repeated, medians reported;
- stats: GB/s of lminspect's full stats scan (``array_stats``, i.e. ``--no-svd`` with
  the cache off) vs a plain ``np.memmap(...).sum()`` over the same bytes (both from the
  page cache, interleaved). numpy's sum is single-threaded, so the scan is
  reported twice: on one thread (``workers=1``, same-thread comparison) and with its
  default worker count (torch's intra-op thread count: the cores, or OMP_NUM_THREADS).
  Medians over the interleaved rounds (best in brackets).

Usage: .venv/bin/python benchmarks/bench_open_stats.py [--gb 2] [--repeat 5] [--fallback]
(run it with and without OMP_NUM_THREADS=1: the default worker count follows it)
Targets: open within 2x of header parse, RSS growth < 20 MB, stats >= 50% of plain sum.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
mode, path = sys.argv[1], sys.argv[2]
# import everything first so only the open itself is measured
import numpy, torch, safetensors.torch  # noqa
import lminspect.weights.store  # noqa
base = rss()
t = time.perf_counter()
if mode == "header":
    import struct
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    out = len(h)
elif mode == "lminspect":
    from lminspect.weights import open_store
    s = open_store(path)
    out = len(s)
elif mode == "safetensors":
    d = safetensors.torch.load_file(path)
    out = len(d)
dt = time.perf_counter() - t
print(json.dumps({"t": dt, "rss_growth": max(hwm() - base, 0), "n": out}))
"""


def make_file(path: Path, gb: float) -> None:
    import numpy as np

    from lminspect.weights.safetensors_format import write_safetensors_lazy

    n_tensors = 16
    per = int(gb * 1e9 / 4 / n_tensors)
    rows = per // 4096
    rng = np.random.default_rng(0)
    block = rng.standard_normal((256, 4096)).astype(np.float32)

    def make(i: int):
        return np.tile(block * (1 + i * 0.1), (rows // 256, 1))

    items = [(f"layers.{i}.mlp.up.weight", "F32", (rows // 256 * 256, 4096), lambda i=i: make(i))
             for i in range(n_tensors)]
    write_safetensors_lazy(path, items)


def run_child(mode: str, path: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", CHILD, mode, str(path)], capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(r.stderr)
    return json.loads(r.stdout)


def stats_bandwidth(path: Path, repeat: int, workers: int, fallback: bool = False) -> dict[str, tuple[float, float]]:
    """GB/s of each variant over ``repeat`` interleaved rounds, as (median, best): wall
    clock for all, and CPU time (this thread's) for the single-threaded ones, which a
    loaded machine's preemption does not inflate. The plain sum of a round is the faster
    of the tensor-by-tensor sum and one sum over the whole file."""
    import numpy as np

    from lminspect.weights import open_store, stats_kernels
    from lminspect.weights.stats import array_stats

    def without_numba() -> None:  # the numpy/torch path users get without the [stats] extra
        saved, stats_kernels._KERNELS = stats_kernels._KERNELS, False
        try:
            [array_stats(s[n], workers=1) for n in names]
        finally:
            stats_kernels._KERNELS = saved

    size = path.stat().st_size
    s = open_store(path)
    names = s.keys()
    nbytes = sum(s.info(n).nbytes for n in names)
    rounds: dict[str, list[float]] = {}

    def timed(key: str, fn, nb: int = nbytes) -> None:
        t, c = time.perf_counter(), time.thread_time()
        fn()
        wall, cpu = time.perf_counter() - t, time.thread_time() - c
        rounds.setdefault(key, []).append(nb / wall)
        rounds.setdefault(key + "_cpu", []).append(nb / max(cpu, 1e-9))

    for _ in range(repeat):
        # the same bytes, tensor by tensor, as float32 memmap views
        timed("plain", lambda: [float(s[n].sum()) for n in names])
        timed("ours1", lambda: [array_stats(s[n], workers=1) for n in names])
        timed("oursw", lambda: [array_stats(s[n], workers=workers) for n in names])
        if fallback:
            timed("fallback1", without_numba)
        mm = np.memmap(path, dtype=np.float32, mode="r", offset=size % 4)
        timed("plain_whole", lambda mm=mm: mm.sum(), size)
        del mm
    for k in ("", "_cpu"):
        whole = rounds.pop("plain_whole" + k)
        rounds["plain" + k] = [max(a, b) for a, b in zip(rounds["plain" + k], whole, strict=True)]
    return {k: (statistics.median(v), max(v)) for k, v in rounds.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where to write the temp file")
    ap.add_argument("--fallback", action="store_true", help="also time the numpy/torch path (no numba)")
    a = ap.parse_args()
    import torch

    workers = torch.get_num_threads()  # array_stats' default worker count
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        path = Path(d) / "bench.safetensors"
        t = time.perf_counter()
        make_file(path, a.gb)
        print(f"file: {path.stat().st_size / 1e9:.2f} GB, 16 F32 tensors (written in {time.perf_counter() - t:.1f} s)")
        res: dict[str, list[dict]] = {m: [] for m in ("header", "lminspect", "safetensors")}
        for _ in range(a.repeat):
            for m in res:
                res[m].append(run_child(m, path))
        med = {m: (statistics.median(r["t"] for r in v), statistics.median(r["rss_growth"] for r in v))
               for m, v in res.items()}
        print(f"open (median of {a.repeat}, fresh process each):")
        for m, (tt, rr) in med.items():
            print(f"  {m:12s} {tt * 1e3:8.2f} ms   peak RSS growth {rr / 1e6:7.1f} MB")
        print(f"  lminspect / header parse: {med['lminspect'][0] / med['header'][0]:.2f}x time; "
              f"lminspect / safetensors.torch.load_file: {med['lminspect'][0] / med['safetensors'][0]:.2f}x time")
        reps = max(3, a.repeat)
        b = stats_bandwidth(path, reps, workers, a.fallback)
        plain, plain_cpu = b["plain"][0], b["plain_cpu"][0]

        def row(key: str) -> str:
            med, best = b[key]
            return f"{med / 1e9:6.2f} GB/s (best {best / 1e9:5.2f})"

        print(f"stats scan (--no-svd, array_stats; medians of {reps} interleaved rounds; numpy's sum is 1 thread):")
        print(f"  plain np.memmap sum   {row('plain')} wall, {row('plain_cpu')} CPU time")
        print(f"  lminspect, 1 thread   {row('ours1')} wall = {b['ours1'][0] / plain:.0%} of plain; "
              f"{row('ours1_cpu')} CPU time = {b['ours1_cpu'][0] / plain_cpu:.0%}")
        print(f"  lminspect, {workers} thread{'s' if workers > 1 else ' '}  {row('oursw')} wall = "
              f"{b['oursw'][0] / plain:.0%} of plain (default workers = torch.get_num_threads())")
        if a.fallback:
            print(f"  without numba, 1 thread {row('fallback1')} wall = {b['fallback1'][0] / plain:.0%} of plain; "
                  f"compiled / fallback {b['ours1'][0] / b['fallback1'][0]:.2f}x")
        print(f"  machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
