"""Ready to generate: whole-process wall time and peak memory of ``lminspect generate smollm2 "Hi" -n 1``
vs the same one-token generation with HF transformers from the same model folder.

Each run is a fresh process (imports, model load, one token), as a user waits for it, after one
untimed run of each (the second start: compiled kernels and packed weights cached); the
commands alternate (A B A B ...) so the machine's load hits both alike; medians are printed with
the ratio, in wall time and in the process's CPU time (user + system: the steadier figure on a
loaded machine). Both run with the same thread count (OMP_NUM_THREADS and torch's threads).

    .venv/bin/python benchmarks/bench_startup.py [--repeats 5] [--threads 1] [--no-pack-cache]
        [--baseline /path/to/another/lminspect/checkout]

``--no-pack-cache`` adds lminspect with ``LMINSPECT_PACK_CACHE=0`` (packing the tiles at every
start, as before models/packcache.py); ``--baseline`` adds another checkout's lminspect (its
folder put first on PYTHONPATH), so a change is measured against what it replaces in one run.

Needs ``lminspect fetch smollm2`` (the GGUF and the HF folder converted from it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

HF_SCRIPT = """
import sys, torch
torch.set_num_threads(int(sys.argv[2]))
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
ids = tok("Hi", return_tensors="pt").input_ids
out = model.generate(ids, max_new_tokens=1, do_sample=False)
print(tok.decode(out[0]))
"""


def _cpu_flags() -> str:
    try:
        flags = next(ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return "?"
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "none of avx2/avx512"


def _timed(cmd: list[str], env: dict[str, str], cwd: str | None = None) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed:\n{err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-pack-cache", action="store_true", help="also lminspect packing at every start")
    ap.add_argument("--baseline", help="another lminspect checkout to run alongside (its root folder)")
    args = ap.parse_args()
    from lminspect.weights.fetch import fetch

    hf_dir = str(fetch("smollm2").hf_dir)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    gen = [sys.executable, "-m", "lminspect", "generate", "smollm2", "Hi", "-n", "1", "--threads", str(args.threads)]
    here = os.getcwd()
    cmds = {  # name: (command, extra environment, cwd); lminspect first, transformers second (the ratio)
        "lminspect generate smollm2 'Hi' -n 1": (gen, {}, here),
        "transformers (same folder), 1 token": ([sys.executable, "-c", HF_SCRIPT, hf_dir, str(args.threads)], {}, here),
    }
    if args.no_pack_cache:
        cmds["lminspect, LMINSPECT_PACK_CACHE=0"] = (gen, {"LMINSPECT_PACK_CACHE": "0"}, here)
    if args.baseline:  # python -m puts the working folder first on sys.path: run from the checkout
        base = os.path.abspath(args.baseline)
        cmds[f"lminspect of {args.baseline}"] = (gen, {"PYTHONPATH": base}, base)
    print(f"python {sys.version.split()[0]}, {args.threads} thread(s), CPU flags: {_cpu_flags()}, "
          f"{args.repeats} whole-process runs each, alternating; load average {os.getloadavg()[0]:.2f}")
    for cmd, extra, cwd in cmds.values():  # untimed: numba's kernel cache and the packed-weights cache exist
        _timed(cmd, {**env, **extra}, cwd)
    runs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in cmds}
    for _ in range(args.repeats):
        for name, (cmd, extra, cwd) in cmds.items():
            runs[name].append(_timed(cmd, {**env, **extra}, cwd))
    med = {}
    for name, rs in runs.items():
        med[name] = statistics.median(w for w, _, _ in rs), statistics.median(c for _, c, _ in rs)
        print(f"{name:40s} wall {med[name][0]:5.2f} s  CPU {med[name][1]:5.2f} s  peak {max(m for *_, m in rs):5.0f} MB"
              f"  (wall: {' '.join(f'{w:.2f}' for w, _, _ in rs)})")
    (aw, ac), (bw, bc) = list(med.values())[:2]
    print(f"ratio transformers / lminspect: {bw / aw:.2f}x wall, {bc / ac:.2f}x CPU; "
          f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
