"""Ready to generate: whole-process wall time and peak memory of ``lminspect generate smollm2 "Hi" -n 1``
vs the same one-token generation with HF transformers from the same model folder.

Each run is a fresh process (imports, model load, one token), as a user waits for it; the two
commands alternate (A B A B ...) so the machine's load hits both alike; medians are printed with
the ratio, in wall time and in the process's CPU time (user + system: the steadier figure on a
loaded machine). Both run with the same thread count (OMP_NUM_THREADS and torch's threads).

    .venv/bin/python benchmarks/bench_startup.py [--repeats 5] [--threads 1]

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


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
    args = ap.parse_args()
    from lminspect.weights.fetch import fetch

    hf_dir = str(fetch("smollm2").hf_dir)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    cmds = {
        "lminspect generate smollm2 'Hi' -n 1": [sys.executable, "-m", "lminspect", "generate", "smollm2", "Hi",
                                                  "-n", "1", "--threads", str(args.threads)],
        "transformers (same folder), 1 token": [sys.executable, "-c", HF_SCRIPT, hf_dir, str(args.threads)],
    }
    print(f"python {sys.version.split()[0]}, {args.threads} thread(s), {args.repeats} whole-process runs each, "
          f"alternating; load average {os.getloadavg()[0]:.2f}")
    runs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in cmds}
    for _ in range(args.repeats):
        for name, cmd in cmds.items():
            runs[name].append(_timed(cmd, env))
    med = {}
    for name, rs in runs.items():
        med[name] = statistics.median(w for w, _, _ in rs), statistics.median(c for _, c, _ in rs)
        print(f"{name:40s} wall {med[name][0]:5.2f} s  CPU {med[name][1]:5.2f} s  peak {max(m for *_, m in rs):5.0f} MB"
              f"  (wall: {' '.join(f'{w:.2f}' for w, _, _ in rs)})")
    (aw, ac), (bw, bc) = med.values()
    print(f"ratio transformers / lminspect: {bw / aw:.2f}x wall, {bc / ac:.2f}x CPU; "
          f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
