"""Benchmark: lminspect's engine vs HF transformers on SmolLM2-135M, CPU, fp32, same threads.

Measures, for both engines on the same float32 weights (HF loads the converted dir, not the GGUF,
to skip its ~20 s metadata parse):
  * greedy decode: 128 new tokens after "Once upon a time" -> TTFT and tokens/s (after the first)
  * full forward: 8 x 256 tokens, no grad -> tokens/s
Medians of ``--repeats`` runs; ratios printed. Run: ``python benchmarks/bench_generate.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def bench_ours(store, tok, prompt: str, n_new: int, repeats: int, fwd_ids: torch.Tensor) -> dict:
    from lminspect.generate import generate
    from lminspect.models import load_model

    t0 = time.perf_counter()
    model = load_model(store)
    load_s = time.perf_counter() - t0
    eos = tok.eos_ids
    tok.eos_ids = []  # always generate the full n_new tokens (HF: min_new_tokens)
    ttft, tps = [], []
    try:
        for _ in range(repeats):
            g = generate(model, tok, prompt, max_new_tokens=n_new)
            for _piece in g:
                pass
            assert g.stats.new_tokens == n_new, g.stats
            ttft.append(g.stats.ttft_s)
            tps.append(g.stats.tokens_per_s)
    finally:
        tok.eos_ids = eos
    fwd = []
    with torch.inference_mode():
        model(fwd_ids[:1, :16])
        for _ in range(repeats):
            t = time.perf_counter()
            model(fwd_ids)
            fwd.append(fwd_ids.numel() / (time.perf_counter() - t))
    return {"load_s": load_s, "ttft_s": _median(ttft), "tok_s": _median(tps), "fwd_tok_s": _median(fwd)}


class _Timer:
    """A HF streamer that notes when the first new token arrives."""

    def __init__(self) -> None:
        self.calls = 0
        self.first: float | None = None

    def put(self, value) -> None:  # first call carries the prompt
        self.calls += 1
        if self.calls == 2 and self.first is None:
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def bench_hf(hf_dir, ids: list[int], n_new: int, repeats: int, fwd_ids: torch.Tensor) -> dict:
    from transformers import AutoModelForCausalLM

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    load_s = time.perf_counter() - t0
    x = torch.tensor([ids])
    ttft, tps = [], []
    with torch.inference_mode():
        for _ in range(repeats):
            timer = _Timer()
            t = time.perf_counter()
            out = model.generate(x, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                                 streamer=timer, pad_token_id=0)
            end = time.perf_counter()
            assert out.shape[1] - x.shape[1] == n_new
            ttft.append(timer.first - t)
            tps.append((n_new - 1) / (end - timer.first))
        fwd = []
        model(fwd_ids[:1, :16])
        for _ in range(repeats):
            t = time.perf_counter()
            model(fwd_ids)
            fwd.append(fwd_ids.numel() / (time.perf_counter() - t))
    return {"load_s": load_s, "ttft_s": _median(ttft), "tok_s": _median(tps), "fwd_tok_s": _median(fwd)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="fetched name or path (default smollm2)")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from lminspect.tokenizer import load_tokenizer
    from lminspect.weights import open_store
    from lminspect.weights.fetch import fetch

    hf_dir = fetch(args.model).hf_dir if "/" not in args.model else args.model
    store = open_store(hf_dir)
    tok = load_tokenizer(store)
    prompt = "Once upon a time"
    ids = tok.encode(prompt)
    fwd_ids = torch.randint(0, store.config["vocab_size"], (8, 256), generator=torch.Generator().manual_seed(0))

    ours = bench_ours(store, tok, prompt, args.new_tokens, args.repeats, fwd_ids)
    hf = bench_hf(hf_dir, ids, args.new_tokens, args.repeats, fwd_ids)
    print(f"SmolLM2-135M fp32 CPU, {args.threads} threads, torch {torch.__version__}, "
          f"{args.new_tokens} new tokens, median of {args.repeats}")
    print(f"{'':22}{'lminspect':>12}{'HF':>12}{'ratio':>8}")
    rows = [("load (s)", "load_s", False), ("TTFT (ms)", "ttft_s", False), ("decode (tok/s)", "tok_s", True),
            ("forward 8x256 (tok/s)", "fwd_tok_s", True)]
    for label, key, higher in rows:
        a, b = ours[key], hf[key]
        scale = 1000 if key == "ttft_s" else 1
        ratio = a / b if higher else b / a
        print(f"{label:22}{a * scale:12.1f}{b * scale:12.1f}{ratio:7.2f}x")


if __name__ == "__main__":
    main()
