"""Benchmark: every workflow of lminspect on a Llama-2-7B-shaped model with its defaults (issue 26).

No 7B checkpoint can be downloaded here, so the files are built first (benchmarks/shaped_files.py,
sparse zeros: no disk, real memory and time when read): a bfloat16 HF directory and a Q4_K_M-like
GGUF of Llama-2-7B's shape, and a Falcon-RW-1B-shaped bfloat16 directory (seed 000's model) for
``activations``. ``--layers N`` truncates the Llama shape for a quick run (``--falcon-layers`` the
Falcon one).

Each command runs in its own process, one after the other, with its defaults (only what a
command requires is given; ``--limit`` / ``--tokens`` / ``-n`` are kept small so a 7B run ends in
minutes, and the memory of these commands does not grow with them: see the activations rows at
two token counts). Recorded per command: wall time of the whole process (loading included),
peak RSS (the child's ru_maxrss) and the largest estimate the memory check made
(``limits.check_memory``; the mapped file is never in it). Memory of a 7B run is dominated by the
mapped file's pages the command touches: they are shared page cache, evictable, and counted in
RSS all the same, so "peak RSS - file" is what the command itself allocated.

Run: ``python benchmarks/bench_big_workflows.py --layers 2`` (quick), and the full shape under
the machine-wide lock: ``flock /tmp/big.lock python benchmarks/bench_big_workflows.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import shaped_files as sf  # noqa: E402

# the child records every memory-check estimate and prints its own peak RSS (ru_maxrss: KiB)
_CLI = """
import resource, runpy, sys
import lminspect.limits as limits
est = []
_check = limits.check_memory
def _spy(what, nbytes, **kw):
    est.append(float(nbytes))
    return _check(what, nbytes, **kw)
limits.check_memory = _spy
sys.argv = ["lminspect", *{argv!r}]
try:
    runpy.run_module("lminspect", run_name="__main__")
except SystemExit as e:
    if e.code:
        raise
finally:
    print("ESTIMATE", max(est, default=0), file=sys.stderr)
    print("MAXRSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""

# the REPL's library: li.open, then what a session does first (generate, lens, stitch)
_REPL = """
import resource, sys
import lminspect as li
m = li.open({path!r})
print(m.generate("Once upon a time", max_new_tokens=4))
print(repr(m.lens("The capital of France is"))[:300])
print(m.stitch("{plan}").generate("Once upon a time", max_new_tokens=2))
print("MAXRSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def commands(model: str, n_layers: int, work: Path, new_tokens: int, limit: int) -> list[tuple[str, list[str]]]:
    """(name, argv) of each workflow on ``model``: defaults, what each command requires, and the
    bounds that keep a 7B run to minutes (none of them changes the memory a command needs)."""
    last = n_layers - 1
    plan = f"0-{last},{last}" if n_layers > 1 else "0,0"  # repeat the last layer
    prompt = "The capital of France is"
    return [
        ("generate", ["generate", model, "Once upon a time", "-n", str(new_tokens)]),
        ("stitch run --compare", ["stitch", "run", model, "Once upon a time", "--plan", plan, "--compare",
                                  "-n", str(new_tokens)]),
        # one inline plan instead of the 13 presets: each preset costs a 7B forward per item
        ("lens", ["lens", model, prompt]),
        ("dla", ["dla", model, prompt, "--target", "id:80"]),
        ("patch", ["patch", model, "--clean", prompt, "--corrupt", "The capital of Greece is",
                   "--metric", "logit_diff: id:80,id:82"]),
        ("attention", ["attention", model, "Once upon a time"]),
        ("activations", ["activations", model, "--out", str(work / "acts"), "--tokens", "256", "--overwrite"]),
        # one layer's tensors: the float64 Gram spectra of a 7B model's 226 matrices take hours on 2 cores
        ("stats", ["stats", model, "--tensor", "layers.0.*"]),
        # last: a cloze item is ~1000 tokens of this byte-level tokenizer, a 7B forward each
        ("eval", ["eval", model, "--limit", str(limit)]),
        ("stitch sweep", ["stitch", "sweep", model, "--eval", "cloze", "--limit", str(limit), "--plan", f"rep={plan}",
                          "--out", str(work / "sweep")]),
    ]


def run(argv: list[str] | None, code: str | None, threads: int, timeout: float, cwd: Path) -> dict:
    """One child process: wall time, peak RSS, the memory check's largest estimate."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "LMINSPECT_THREADS": str(threads), "COLUMNS": "200",
           "PYTHONPATH": str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    src = code if code is not None else _CLI.format(argv=argv)
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, env=env,
                           timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired:
        return {"ok": False, "wall_s": time.perf_counter() - t0, "error": f"timeout {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    out = p.stdout + p.stderr
    row: dict = {"ok": p.returncode == 0, "wall_s": wall}
    rss = re.findall(r"MAXRSS (\d+)", out)
    if rss:
        row["rss"] = int(rss[-1]) * 1024
    est = re.findall(r"ESTIMATE ([\d.e+]+)", out)
    if est:
        row["estimate"] = float(est[-1])
    if p.returncode:
        lines = [ln for ln in out.splitlines() if ln.strip() and not ln.startswith(("MAXRSS", "ESTIMATE"))]
        row["error"] = " | ".join(lines[-3:])[-400:]
    return row


def _gb(n: float | None) -> str:
    return "-" if n is None else f"{n / 1e9:.2f} GB"


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=32, help="Llama decoder layers (32: Llama-2-7B)")
    ap.add_argument("--falcon-layers", type=int, default=None, help="Falcon layers (default: 24, or --layers when smaller)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=6, help="-n of generate / stitch run")
    ap.add_argument("--limit", type=int, default=1, help="--limit of eval / stitch sweep (items)")
    ap.add_argument("--acts-tokens", type=int, nargs="*", default=[2048, 4096],
                    help="Falcon activations runs (token counts: flat memory means the same peak)")
    ap.add_argument("--acts-batch", type=int, default=None,
                    help="--batch-size of the Falcon runs (default 8; compare counts of whole batches)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/lminspect-bench-big"), help="where the files are built")
    ap.add_argument("--only", nargs="*", default=None, help="command names to run (default: all)")
    ap.add_argument("--models", nargs="*", default=["bf16", "gguf", "falcon"], choices=["bf16", "gguf", "falcon"])
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()

    import torch

    from lminspect.limits import available_memory

    s = sf.shape(layers=args.layers)
    fl = args.falcon_layers or min(24, args.layers if args.layers < 24 else 24)
    args.dir.mkdir(parents=True, exist_ok=True)
    bf16 = args.dir / f"llama7b-{args.layers}L-bf16"
    gg = args.dir / f"llama7b-{args.layers}L-q4km.gguf"
    falcon = args.dir / f"falcon-rw-1b-{fl}L-bf16"
    if not (bf16 / "model.safetensors").is_file():
        sf.write_bf16_dir(bf16, s)
    if not gg.is_file():
        sf.write_kquant_gguf(gg, s)
    if not (falcon / "model.safetensors").is_file():
        sf.write_falcon_dir(falcon, sf.falcon_shape(layers=fl))
    flags = sorted({f for f in open("/proc/cpuinfo").read().split() if f.startswith(("avx", "amx", "fma"))})
    print(f"# Llama-2-7B shape, {args.layers} layers: bf16 dir {_gb(_size(bf16))}, Q4_K_M-like GGUF {_gb(_size(gg))}; "
          f"Falcon-RW-1B shape, {fl} layers: bf16 dir {_gb(_size(falcon))} (sparse zeros)")
    print(f"# threads {args.threads}, torch {torch.__version__}, CPU flags: {' '.join(flags)}; "
          f"memory available {_gb(available_memory())}; load average {os.getloadavg()[0]:.1f}")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-big-wf-") as tmp:
        work = Path(tmp)
        jobs: list[tuple[str, str, list[str] | None, str | None, int]] = []
        for label, path in (("bf16", bf16), ("gguf", gg)):
            if label not in args.models:
                continue
            size = _size(path)
            for name, argv in commands(str(path), args.layers, work, args.new_tokens, args.limit):
                jobs.append((label, name, argv, None, size))
            jobs.append((label, "diff", ["diff", str(bf16), str(gg), "--no-svd"], None, _size(bf16) + _size(gg)))
            plan = f"0-{args.layers - 1},{args.layers - 1}"
            jobs.append((label, "repl (li.open)", None, _REPL.format(path=str(path), plan=plan), size))
        if "falcon" in args.models:
            for n in args.acts_tokens:
                jobs.append(("falcon", f"activations {n} tokens",
                             ["activations", str(falcon), "--out", str(work / f"facts{n}"), "--tokens", str(n)]
                             + ([] if args.acts_batch is None else ["--batch-size", str(args.acts_batch)]),
                             None, _size(falcon)))
        seen_diff = False
        for label, name, argv, code, size in jobs:
            if args.only is not None and name.split(" ")[0] not in args.only and name not in args.only:
                continue
            if name == "diff":
                if seen_diff:
                    continue
                seen_diff = True
                label = "bf16 vs gguf"
            r = run(argv, code, args.threads, args.timeout, work)
            r.update(model=label, command=name, file=size)
            rows.append(r)
            print(f"  {label:>12} {name:<24} {'ok ' if r['ok'] else 'FAIL'} {r['wall_s']:7.1f} s  "
                  f"peak RSS {_gb(r.get('rss'))}  (file {_gb(size)}, estimate {_gb(r.get('estimate'))})"
                  + (f"  {r['error']}" if not r["ok"] else ""), flush=True)
    print("\n| model | command | ok | wall | peak RSS | peak RSS - file | memory check's estimate |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        rss = r.get("rss")
        print(f"| {r['model']} | {r['command']} | {'yes' if r['ok'] else 'NO'} | {r['wall_s']:.1f} s | {_gb(rss)} | "
              f"{_gb(None if rss is None else rss - r['file'])} | {_gb(r.get('estimate'))} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
