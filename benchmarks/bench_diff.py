"""Benchmark: ``lminspect diff`` of two SmolLM2-sized models against a plain torch script.

Both compute the same numbers for every tensor of SmolLM2-135M (fp32 HF dir, 272 tensors,
538 MB) against a perturbed copy (every weight times 1 + 0.01 N(0, 1), made once in a temp
folder): rel_change, cosine, max |diff|, std, kurtosis, and for matrices the singular values
(stable rank, power-law alpha) and the top-8 singular-direction overlap.

- lminspect: ``compare.diff.diff_models`` with an empty cache (the first, uncached run);
- plain torch: ``safetensors.torch.load_file`` of both models, then per tensor the textbook
  torch ops (``b - a``, norms, one float64 Gram + ``eigh`` per matrix side; alpha by
  lminspect's ``weights.powerlaw.powerlaw_fit`` on the eigenvalues, weightwatcher's fit).

Each runs in its own subprocess with its own empty cache, alternating (``--repeats``), one thread
(``torch.set_num_threads(1)``); ``--tensors N`` limits both to the first N tensors of the file.
Reported: medians of wall and CPU seconds (CPU: the steadier figure on a loaded machine), peak RSS (VmHWM, includes the
memory-mapped file pages read) and peak anonymous memory (RssAnon sampled every 5 ms: what
the process allocated itself), and the largest difference between the two tools' numbers.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_diff.py [--model DIR] [--keep DIR] [--tensors N] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, sys, threading, time
mode, a_dir, b_dir, names_file = sys.argv[1:5]
SELECTED = json.load(open(names_file))  # {"hf": [...], "canonical": [...]}: the tensors to compare

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0

peak = {"anon": 0}
stop = False
def sample():
    while not stop:
        peak["anon"] = max(peak["anon"], status("RssAnon"))
        time.sleep(0.005)

import numpy as np, torch  # imported before the clock starts, as a REPL user would have them
torch.set_num_threads(1)
from lminspect.weights.powerlaw import powerlaw_fit
base_anon = status("RssAnon")
threading.Thread(target=sample, daemon=True).start()
t0, c0 = time.perf_counter(), time.process_time()
rows = {}
if mode == "lminspect":
    from lminspect.compare.diff import diff_models
    from lminspect.weights import open_store
    a, b = open_store(a_dir), open_store(b_dir)
    out, _ = diff_models(a, b, names=SELECTED["canonical"])
    for r in out:
        rows[r["name"]] = {k: r.get(k) for k in ("rel_change", "cosine", "max_abs_diff", "std_b", "kurtosis_b",
                                                 "stable_rank_b", "alpha_b", "subspace_overlap")}
else:
    from safetensors import safe_open
    A, B = (safe_open(os.path.join(d, "model.safetensors"), "pt") for d in (a_dir, b_dir))

    def moments(x):
        x = x.double()
        d = x - x.mean()
        v = (d * d).mean()
        return float(v.sqrt()), float((d ** 4).mean() / v ** 2 - 3)

    def spectrum(x):
        g = (x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T).double()
        ev, vec = torch.linalg.eigh(g)
        ev = ev.clamp_min(0).flip(0)
        s = ev.sqrt()
        return float((ev.sum() / ev[0])), powerlaw_fit(ev.numpy()).get("alpha"), vec[:, -8:].flip(1)

    for name in SELECTED["hf"]:
        a, b = A.get_tensor(name).float(), B.get_tensor(name).float()
        d = b - a
        na, nb = float(a.norm()), float(b.norm())
        r = {"rel_change": float(d.norm()) / na, "cosine": float((a * b).sum()) / (na * nb),
             "max_abs_diff": float(d.abs().max())}
        r["std_b"], r["kurtosis_b"] = moments(b)
        if a.ndim == 2:
            _, _, va = spectrum(a)
            r["stable_rank_b"], r["alpha_b"], vb = spectrum(b)
            m = va.T @ vb
            r["subspace_overlap"] = float((m * m).sum() / m.shape[0])
        rows[name] = r
dt, cpu = time.perf_counter() - t0, time.process_time() - c0
stop = True
print(json.dumps({"mode": mode, "seconds": dt, "cpu": cpu, "hwm": status("VmHWM"), "anon": peak["anon"] - base_anon,
                  "rows": rows}))
"""


def make_copy(src: Path, dst: Path) -> None:
    import shutil

    import numpy as np
    from safetensors.numpy import load_file, save_file

    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.name != "model.safetensors" and f.is_file():
            shutil.copy(f, dst / f.name)
    rng = np.random.default_rng(0)
    t = load_file(str(src / "model.safetensors"))
    t = {k: (v * (1 + 0.01 * rng.standard_normal(v.shape, dtype=np.float32))).astype(v.dtype) for k, v in t.items()}
    save_file(t, str(dst / "model.safetensors"), metadata={"format": "pt"})


def canonical_map(model_dir: Path) -> dict[str, str]:
    """HF name -> canonical name (the lminspect rows are keyed by canonical names)."""
    from lminspect.weights import open_store

    s = open_store(model_dir)
    return {s.canonical_source(c): c for c in s.canonical_names()}


def run(mode: str, a: Path, b: Path, cache: str, names_file: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", LMINSPECT_CACHE=cache)
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(a), str(b), names_file], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="fp32 HF dir (default: the fetched SmolLM2's)")
    ap.add_argument("--keep", help="folder for the perturbed copy (reused if present)")
    ap.add_argument("--tensors", type=int, default=0, help="only the first N tensors (file order; 0: all)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each tool, alternating, each uncached")
    args = ap.parse_args()
    if args.model:
        a = Path(args.model)
    else:
        from lminspect.weights.fetch import fetch

        a = Path(fetch("smollm2").hf_dir)
    names = canonical_map(a)
    from safetensors import safe_open

    with safe_open(str(a / "model.safetensors"), "np") as f:
        hf = [n for n in f.keys() if n in names]  # noqa: SIM118 - safe_open has no iteration
    hf = hf[: args.tensors] if args.tensors else hf
    print(f"{len(hf)} tensors, one thread, {args.repeats} uncached run(s) of each tool, alternating; "
          f"load average {os.getloadavg()[0]:.2f}")
    res: dict[str, list[dict]] = {"lminspect": [], "torch": []}
    with tempfile.TemporaryDirectory() as tmp:
        b = Path(args.keep) if args.keep else Path(tmp) / "perturbed"
        if not (b / "model.safetensors").is_file():
            make_copy(a, b)
        names_file = Path(tmp) / "names.json"
        names_file.write_text(json.dumps({"hf": hf, "canonical": [names[n] for n in hf]}))
        for i in range(args.repeats):
            for m in res:
                res[m].append(run(m, a, b, str(Path(tmp) / f"cache-{m}-{i}"), str(names_file)))
    worst: dict[str, float] = {}  # per number: the largest relative difference over the tensors
    for hf_name, r in res["torch"][0]["rows"].items():
        mine = res["lminspect"][0]["rows"][names[hf_name]]
        for k, v in r.items():
            if v is not None and mine.get(k) is not None:
                worst[k] = max(worst.get(k, 0.0), abs(v - mine[k]) / max(abs(v), 1e-6))
    mb = 1 << 20
    med = {}
    for m, rs in res.items():
        med[m] = (statistics.median(r["seconds"] for r in rs), statistics.median(r["cpu"] for r in rs))
        walls = " ".join(f"{r['seconds']:.1f}" for r in rs)
        print(f"{m:10s} wall {med[m][0]:7.1f} s  CPU {med[m][1]:7.1f} s   peak RSS {max(r['hwm'] for r in rs) / mb:6.0f} MB"
              f"   peak anonymous {max(r['anon'] for r in rs) / mb:6.0f} MB   (wall: {walls})")
    print(f"time lminspect / torch: {med['lminspect'][0] / med['torch'][0]:.2f}x wall, "
          f"{med['lminspect'][1] / med['torch'][1]:.2f}x CPU; load average at the end {os.getloadavg()[0]:.2f}")
    print("largest relative difference per number: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))


if __name__ == "__main__":
    main()
