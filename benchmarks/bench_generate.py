"""Benchmark: token generation on SmolLM2-135M, every path side by side, in one run.

Engines (all greedy, the same prompt, the same thread count, loaded once):
  * lminspect ``--weights stored`` (the GGUF's Q4_1/Q8_0 blocks, dequantized in the kernel),
    ``float32`` and ``bfloat16`` (dense)
  * HF transformers fp32 and bf16 (on the float32 HF directory converted from the same GGUF;
    loading the GGUF itself costs HF ~20 s of metadata parsing)
  * llama.cpp through ``llama-cpp-python`` on the GGUF itself, when it is installed (it builds
    from source; the row is skipped with a note otherwise)

Measured: TTFT and decode tokens/s (tokens after the first / time after the first) for
``--new-tokens`` tokens after "Once upon a time", EOS ignored; and a full forward of 8 x 256
tokens (prefill throughput) for the float32-activation paths. Repeats alternate the engines so
machine noise hits all alike; medians are printed, with ratios to HF fp32 and to llama.cpp.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_generate.py --threads 1`` (``--markdown`` for
the README table; ``--device cuda`` for the dense paths on a GPU).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

# OpenMP threads wait passively, as the CLI sets them (runtime.set_threads): with 2 threads on busy
# cores, spinning pools (torch's, numba's) made prefill 10x slower; set before torch loads
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

PROMPT = "Once upon a time"


def _ours_decode(model: Any, tok: Any, n_new: int, fast: bool = True) -> tuple[float, float]:
    from lminspect.generate import generate
    from lminspect.models import decode

    eos = tok.eos_ids
    tok.eos_ids = []  # always generate the full n_new tokens (HF: min_new_tokens)
    decode.ENABLED = fast  # False: every step through the module tree (what the fast path replaces)
    try:
        g = generate(model, tok, PROMPT, max_new_tokens=n_new)
        for _piece in g:
            pass
    finally:
        tok.eos_ids = eos
        decode.ENABLED = True
    assert g.stats.new_tokens == n_new, g.stats
    return g.stats.ttft_s, g.stats.tokens_per_s


class _Timer:
    """A HF streamer that notes when the first new token arrives."""

    def __init__(self) -> None:
        self.calls = 0
        self.first: float | None = None

    def put(self, value: Any) -> None:  # the first call carries the prompt
        self.calls += 1
        if self.calls == 2 and self.first is None:
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def _hf_decode(model: Any, ids: list[int], n_new: int, device: str) -> tuple[float, float]:
    x = torch.tensor([ids], device=device)
    timer = _Timer()
    t = time.perf_counter()
    out = model.generate(x, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False, streamer=timer,
                         pad_token_id=0)
    end = time.perf_counter()
    assert out.shape[1] - x.shape[1] == n_new
    return timer.first - t, (n_new - 1) / (end - timer.first)


def _llama_cpp(gguf: str, threads: int) -> tuple[Any, str]:
    """A llama.cpp model on the GGUF, or (None, why not)."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None, "llama-cpp-python is not installed"
    return Llama(model_path=gguf, n_threads=threads, n_threads_batch=threads, n_ctx=512, verbose=False), ""


def _llama_cpp_decode(llm: Any, n_new: int) -> tuple[float, float]:
    tokens = llm.tokenize(PROMPT.encode(), add_bos=False)
    llm.reset()
    t = time.perf_counter()
    first = None
    n = 0
    for _tok in llm.generate(tokens, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        n += 1
        if first is None:
            first = time.perf_counter()
        if n == n_new:
            break
    end = time.perf_counter()
    return first - t, (n_new - 1) / (end - first)


def _forward(fn: Callable[[torch.Tensor], Any], ids: torch.Tensor) -> float:
    t = time.perf_counter()
    fn(ids)
    return ids.numel() / (time.perf_counter() - t)


def load_engines(fetched: Any, device: str, threads: int, with_llama_cpp: bool,
                 only: tuple[str, ...] = ()) -> tuple[dict, dict, list[str]]:
    """name -> (decode fn, forward fn or None), name -> load seconds, notes. ``only``: keep the
    engines whose name contains one of these (all when empty)."""
    from transformers import AutoModelForCausalLM

    from lminspect.models import load_model
    from lminspect.tokenizer import load_tokenizer
    from lminspect.weights import open_store

    engines: dict[str, tuple[Callable[[int], tuple[float, float]], Any]] = {}
    load_s: dict[str, float] = {}
    notes: list[str] = []
    store = open_store(str(fetched.hf_dir))
    tok = load_tokenizer(store)
    ids = tok.encode(PROMPT)
    paths = ["stored", "float32", "bfloat16"] if device == "cpu" else ["float32", "bfloat16"]
    if device != "cpu":
        notes.append("lminspect stored: a CPU path (on CUDA the dense weights are used)")
    def wanted(name: str) -> bool:
        return not only or any(o in name for o in only)

    for w in paths:
        if not wanted(f"lminspect {w}"):
            continue
        t0 = time.perf_counter()
        # the stored path reads the GGUF blocks (found beside the fetched HF dir)
        m = load_model(open_store(str(fetched.hf_dir)), weights=w, device=device)
        load_s[f"lminspect {w}"] = time.perf_counter() - t0
        engines[f"lminspect {w}"] = ((lambda n, m=m: _ours_decode(m, tok, n)),
                                     m if w != "bfloat16" else None)
        if w == "stored" and wanted("lminspect stored, module tree"):  # the same model, each step through its modules
            engines["lminspect stored, module tree"] = ((lambda n, m=m: _ours_decode(m, tok, n, fast=False)), None)
            load_s["lminspect stored, module tree"] = load_s["lminspect stored"]
    for name, dt in (("HF fp32", torch.float32), ("HF bf16", torch.bfloat16)):
        if not wanted(name):
            continue
        t0 = time.perf_counter()
        hf = AutoModelForCausalLM.from_pretrained(fetched.hf_dir, dtype=dt).to(device).eval()
        load_s[name] = time.perf_counter() - t0
        engines[name] = ((lambda n, hf=hf: _hf_decode(hf, ids, n, device)), hf if dt == torch.float32 else None)
    if with_llama_cpp and device == "cpu" and fetched.gguf_path is not None and wanted("llama.cpp"):
        t0 = time.perf_counter()
        llm, why = _llama_cpp(str(fetched.gguf_path), threads)
        if llm is None:
            notes.append(f"llama.cpp: skipped ({why})")
        else:
            load_s["llama.cpp Q4_1"] = time.perf_counter() - t0
            engines["llama.cpp Q4_1"] = ((lambda n: _llama_cpp_decode(llm, n)), None)
    return engines, load_s, notes


def run(fetched: Any, n_new: int, repeats: int, device: str, threads: int, with_llama_cpp: bool,
        only: tuple[str, ...] = (), forward: bool = True) -> tuple[dict, list[str]]:
    engines, load_s, notes = load_engines(fetched, device, threads, with_llama_cpp, only)
    res: dict[str, dict[str, list[float]]] = {k: {"ttft_s": [], "tok_s": [], "fwd_tok_s": []} for k in engines}
    fwd_ids = torch.randint(0, 49152, (8, 256), generator=torch.Generator().manual_seed(0)).to(device)
    with torch.inference_mode():
        for decode, _fwd in engines.values():  # warm-up: kernels compiled, caches touched
            decode(4)
        for _ in range(repeats):
            for name, (decode, fwd) in engines.items():
                a, b = decode(n_new)
                res[name]["ttft_s"].append(a)
                res[name]["tok_s"].append(b)
                if fwd is not None and forward:
                    res[name]["fwd_tok_s"].append(_forward(fwd, fwd_ids))
    med = {k: {m: (statistics.median(v) if v else float("nan")) for m, v in r.items()} for k, r in res.items()}
    for k in med:
        med[k]["load_s"] = load_s[k]
    return med, notes


def table(med: dict, markdown: bool) -> str:
    hf = med.get("HF fp32", {}).get("tok_s", float("nan"))
    lc = med.get("llama.cpp Q4_1", {}).get("tok_s", float("nan"))
    head = ["engine", "load s", "TTFT ms", "decode tok/s", "x HF fp32", "x llama.cpp", "fwd 8x256 tok/s"]
    rows = []
    for name, r in med.items():
        rows.append([name, f"{r['load_s']:.1f}", f"{r['ttft_s'] * 1000:.0f}", f"{r['tok_s']:.1f}",
                     f"{r['tok_s'] / hf:.2f}", f"{r['tok_s'] / lc:.2f}" if lc == lc else "-",
                     f"{r['fwd_tok_s']:.0f}" if r["fwd_tok_s"] == r["fwd_tok_s"] else "-"])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    fmt = lambda r: "  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(r, widths, strict=True)))  # noqa: E731
    return "\n".join([fmt(head), *[fmt(r) for r in rows]])


def _cpu_flags() -> str:
    """The CPU model and its vector extensions that matter to the kernels."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return platform.processor() or "unknown"
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    vec = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16") if f in flags]
    return f"{model}, {os.cpu_count()} cores, {' '.join(vec) or 'no AVX2'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="a fetched name (default smollm2)")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-llama-cpp", action="store_true", help="skip llama.cpp even when installed")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    ap.add_argument("--only", default="", help="comma-separated parts of engine names to run (e.g. 'stored,llama.cpp')")
    ap.add_argument("--no-forward", action="store_true", help="skip the 8 x 256 forward")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from lminspect.weights.fetch import fetch

    fetched = fetch(args.model)
    only = tuple(o.strip() for o in args.only.split(",") if o.strip())
    med, notes = run(fetched, args.new_tokens, args.repeats, args.device, args.threads, not args.no_llama_cpp,
                     only, not args.no_forward)
    print(f"SmolLM2-135M-Instruct ({fetched.gguf_path.name if fetched.gguf_path else args.model}), {args.device}, "
          f"{args.threads} thread(s), torch {torch.__version__}, {args.new_tokens} new tokens, "
          f"median of {args.repeats}")
    print(f"CPU: {_cpu_flags()}; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(table(med, args.markdown))
    for n in notes:
        print(f"note: {n}")


if __name__ == "__main__":
    main()
