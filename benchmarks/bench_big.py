"""Benchmark: a Llama-2-7B-shaped model on this machine, lminspect beside transformers (issue 26).

No 7B checkpoint can be downloaded here, so the files are built first (benchmarks/shaped_files.py):
a bfloat16 HF directory and a Q4_K_M-like GGUF (Q4_K + Q6_K blocks, float32 norms), their data a
sparse hole of zeros (no disk; reading it costs real memory and time). ``--layers N`` truncates
the shape for a quick run.

Each engine runs in its own process, one after the other (never two 7B models at once), with the
same thread count: ``lminspect generate MODEL "Once upon a time" -n 6`` (the CLI, its defaults)
on the directory and on the GGUF, and transformers bf16 (``from_pretrained(dtype=bfloat16)``,
greedy ``generate`` of 6 tokens) on the directory; llama.cpp (llama-cpp-python) on the GGUF
when it is installed. Recorded per run: wall time of the whole process (start to 6 tokens,
loading included), peak RSS (the child's ru_maxrss), TTFT and decode tok/s (tokens after the
first / time after the first). ``--repeats`` runs alternate the engines; medians are printed
with the ratios the issue asks for.

Run: ``python benchmarks/bench_big.py --layers 4`` (quick), ``python benchmarks/bench_big.py``
(full 7B: needs ~15 GB free for the bf16 runs; check ``free -g`` first).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import shaped_files as sf  # noqa: E402

PROMPT = "Once upon a time"

# the child reports its own peak RSS as the last line of stderr (ru_maxrss: KiB on Linux)
_RSS = "import resource, sys; print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)"

_LMINSPECT = """
import runpy, sys
sys.argv = ["lminspect", "generate", {path!r}, {prompt!r}, "-n", "{n}", "--threads", "{threads}"]
try:
    runpy.run_module("lminspect", run_name="__main__")
except SystemExit as e:
    if e.code:
        raise
finally:
    """ + _RSS

_HF = """
import time, torch
t0 = time.perf_counter()
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM
from transformers.generation.streamers import BaseStreamer
torch.set_num_threads({threads})
model = AutoModelForCausalLM.from_pretrained({path!r}, dtype=torch.bfloat16)
ids = torch.tensor([Tokenizer.from_file({path!r} + "/tokenizer.json").encode({prompt!r}).ids])
t_load = time.perf_counter() - t0

class Clock(BaseStreamer):
    def __init__(self):
        self.times = []
    def put(self, value):
        self.times.append(time.perf_counter())
    def end(self):
        pass

clock = Clock()
t1 = time.perf_counter()
with torch.inference_mode():
    model.generate(ids, max_new_tokens={n}, min_new_tokens={n}, do_sample=False, streamer=clock)
ts = clock.times[1:]  # the first put is the prompt
print(f"HFSTATS load={{t_load:.2f}} ttft={{ts[0] - t1:.3f}} tok_s={{({n} - 1) / (ts[-1] - ts[0]):.3f}}")
""" + _RSS

_LLAMA_CPP = """
import time
from llama_cpp import Llama
t0 = time.perf_counter()
llm = Llama(model_path={path!r}, n_threads={threads}, n_ctx=256, verbose=False)
t_load = time.perf_counter() - t0
times = []
t1 = time.perf_counter()
for _ in llm({prompt!r}, max_tokens={n}, stream=True, temperature=0.0):
    times.append(time.perf_counter())
print(f"HFSTATS load={{t_load:.2f}} ttft={{times[0] - t1:.3f}} tok_s={{(len(times) - 1) / (times[-1] - times[0]):.3f}}")
""" + _RSS


def _run(code: str, threads: int, timeout: float) -> dict:
    """One child process: wall time, peak RSS, TTFT and decode tok/s."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "COLUMNS": "400",
           "PYTHONPATH": str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
    wall = time.perf_counter() - t0
    out = p.stdout + p.stderr
    if p.returncode:
        raise RuntimeError(f"child failed ({p.returncode}):\n{out[-3000:]}")
    rss = int(re.findall(r"MAXRSS (\d+)", out)[-1]) * 1024
    row = {"wall_s": wall, "rss": rss}
    m = re.search(r"TTFT (\d+) ms, ([\d.]+) tok/s.*?weights: ([^,\n]+)", " ".join(out.split()))
    if m:
        row.update(ttft_s=int(m.group(1)) / 1000, tok_s=float(m.group(2)), weights=m.group(3))
    m = re.search(r"HFSTATS load=([\d.]+) ttft=([\d.]+) tok_s=([\d.]+)", out)
    if m:
        row.update(load_s=float(m.group(1)), ttft_s=float(m.group(2)), tok_s=float(m.group(3)))
    return row


def _median(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if key in r]
    return statistics.median(vals) if vals else float("nan")


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=32, help="decoder layers (32: Llama-2-7B)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/lminspect-bench-big"), help="where the files are built")
    ap.add_argument("--skip", nargs="*", default=[], choices=["bf16", "hf", "gguf", "llama.cpp"])
    ap.add_argument("--q4-0", action="store_true",
                    help="also a Q4_0 GGUF (every matrix Q4_0): lminspect and llama.cpp on it")
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()

    import torch

    from lminspect.limits import available_memory

    s = sf.shape(layers=args.layers)
    args.dir.mkdir(parents=True, exist_ok=True)
    bf16 = args.dir / f"llama7b-{args.layers}L-bf16"
    gg = args.dir / f"llama7b-{args.layers}L-q4km.gguf"
    t = time.perf_counter()
    if not (bf16 / "model.safetensors").is_file():
        sf.write_bf16_dir(bf16, s)
    if not gg.is_file():
        sf.write_kquant_gguf(gg, s)
    q40 = args.dir / f"llama7b-{args.layers}L-q4_0.gguf"
    if args.q4_0 and not q40.is_file():
        sf.write_kquant_gguf(q40, s, kind_of=lambda name, shp: "F32" if len(shp) == 1 else "Q4_0")
    build_s = time.perf_counter() - t
    flags = sorted({f for f in open("/proc/cpuinfo").read().split() if f.startswith(("avx", "amx", "fma"))})
    print(f"# Llama-2-7B shape, {args.layers} layers: bf16 dir {_gb((bf16 / 'model.safetensors').stat().st_size)}, "
          f"Q4_K_M-like GGUF {_gb(gg.stat().st_size)} (built in {build_s:.1f} s, sparse zeros)")
    print(f"# threads {args.threads}, torch {torch.__version__}, CPU flags: {' '.join(flags)}; "
          f"memory available {_gb(available_memory())}; {args.new_tokens} new tokens after {PROMPT!r}")
    fmt = {"prompt": PROMPT, "n": args.new_tokens, "threads": args.threads}
    engines = []
    if "bf16" not in args.skip:
        engines.append(("lminspect bf16 dir", _LMINSPECT.format(path=str(bf16), **fmt)))
    if "hf" not in args.skip:
        engines.append(("transformers bf16", _HF.format(path=str(bf16), **fmt)))
    if "gguf" not in args.skip:
        engines.append(("lminspect Q4_K_M gguf", _LMINSPECT.format(path=str(gg), **fmt)))
    if "llama.cpp" not in args.skip:
        try:
            import llama_cpp  # noqa: F401

            engines.append(("llama.cpp Q4_K_M gguf", _LLAMA_CPP.format(path=str(gg), **fmt)))
        except ImportError:
            print("# llama.cpp: llama-cpp-python is not installed (it builds from source); row skipped")
    if args.q4_0:
        engines.append(("lminspect Q4_0 gguf", _LMINSPECT.format(path=str(q40), **fmt)))
        if "llama.cpp" not in args.skip and any(n.startswith("llama.cpp") for n, _ in engines):
            engines.append(("llama.cpp Q4_0 gguf", _LLAMA_CPP.format(path=str(q40), **fmt)))
    rows: dict[str, list[dict]] = {name: [] for name, _ in engines}
    for _ in range(args.repeats):
        for name, code in engines:
            r = _run(code, args.threads, args.timeout)
            rows[name].append(r)
            print(f"  {name}: {json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()})}",
                  flush=True)
    print(f"\n| engine | wall to {args.new_tokens} tokens | peak RSS | TTFT | decode tok/s |")
    print("|---|---|---|---|---|")
    for name, rs in rows.items():
        print(f"| {name} | {_median(rs, 'wall_s'):.1f} s | {_gb(_median(rs, 'rss'))} | {_median(rs, 'ttft_s'):.2f} s "
              f"| {_median(rs, 'tok_s'):.2f} |")
    ours, hf = rows.get("lminspect bf16 dir"), rows.get("transformers bf16")
    if ours and hf:
        print(f"\nbf16 dir vs transformers: peak RSS {_median(ours, 'rss') / _median(hf, 'rss'):.2f}x (target <= 1.1), "
              f"wall {_median(ours, 'wall_s') / _median(hf, 'wall_s'):.2f}x (target <= 1), "
              f"decode {_median(ours, 'tok_s') / _median(hf, 'tok_s'):.2f}x (target >= 1)")
    q = rows.get("lminspect Q4_K_M gguf")
    if q:
        extra = _median(q, "rss") - gg.stat().st_size
        print(f"Q4_K_M gguf: peak RSS = file + {_gb(extra)} (target <= file + 1.5 GB)")
        lc = rows.get("llama.cpp Q4_K_M gguf")
        if lc:
            print(f"Q4_K_M decode vs llama.cpp: {_median(q, 'tok_s') / _median(lc, 'tok_s'):.2f}x (target >= 0.5)")
    q = rows.get("lminspect Q4_0 gguf")
    if q:
        print(f"Q4_0 gguf: peak RSS = {_median(q, 'rss') / q40.stat().st_size:.2f}x the file "
              f"({_gb(q40.stat().st_size)})")
        lc = rows.get("llama.cpp Q4_0 gguf")
        if lc:
            print(f"Q4_0 decode vs llama.cpp: {_median(q, 'tok_s') / _median(lc, 'tok_s'):.2f}x; "
                  f"llama.cpp peak RSS {_median(lc, 'rss') / q40.stat().st_size:.2f}x the file")


if __name__ == "__main__":
    main()
