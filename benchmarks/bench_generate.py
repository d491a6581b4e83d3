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


def _ours_decode(model, tok, prompt: str, n_new: int) -> tuple[float, float]:
    from lminspect.generate import generate

    eos = tok.eos_ids
    tok.eos_ids = []  # always generate the full n_new tokens (HF: min_new_tokens)
    try:
        g = generate(model, tok, prompt, max_new_tokens=n_new)
        for _piece in g:
            pass
    finally:
        tok.eos_ids = eos
    assert g.stats.new_tokens == n_new, g.stats
    return g.stats.ttft_s, g.stats.tokens_per_s


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


def _hf_decode(model, ids: list[int], n_new: int) -> tuple[float, float]:
    x = torch.tensor([ids])
    timer = _Timer()
    t = time.perf_counter()
    out = model.generate(x, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False, streamer=timer,
                         pad_token_id=0)
    end = time.perf_counter()
    assert out.shape[1] - x.shape[1] == n_new
    return timer.first - t, (n_new - 1) / (end - timer.first)


def _forward(fn, ids: torch.Tensor) -> float:
    t = time.perf_counter()
    fn(ids)
    return ids.numel() / (time.perf_counter() - t)


def run(hf_dir, n_new: int, repeats: int) -> tuple[dict, dict]:
    """Both engines loaded once; repeats alternate ours / HF so machine noise hits both alike."""
    from transformers import AutoModelForCausalLM

    from lminspect.models import load_model
    from lminspect.tokenizer import load_tokenizer
    from lminspect.weights import open_store

    prompt = "Once upon a time"
    t0 = time.perf_counter()
    store = open_store(hf_dir)
    model = load_model(store)
    tok = load_tokenizer(store)
    ours: dict[str, list[float]] = {"load_s": [time.perf_counter() - t0], "ttft_s": [], "tok_s": [], "fwd_tok_s": []}
    t0 = time.perf_counter()
    hf_model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    hf: dict[str, list[float]] = {"load_s": [time.perf_counter() - t0], "ttft_s": [], "tok_s": [], "fwd_tok_s": []}
    ids = tok.encode(prompt)
    fwd_ids = torch.randint(0, model.vocab_size, (8, 256), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        model(fwd_ids[:1, :16])
        hf_model(fwd_ids[:1, :16])
        for _ in range(repeats):
            a, b = _ours_decode(model, tok, prompt, n_new)
            ours["ttft_s"].append(a)
            ours["tok_s"].append(b)
            a, b = _hf_decode(hf_model, ids, n_new)
            hf["ttft_s"].append(a)
            hf["tok_s"].append(b)
            ours["fwd_tok_s"].append(_forward(model, fwd_ids))
            hf["fwd_tok_s"].append(_forward(hf_model, fwd_ids))
    return ({k: _median(v) for k, v in ours.items()}, {k: _median(v) for k, v in hf.items()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="fetched name or path (default smollm2)")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from lminspect.weights.fetch import fetch

    hf_dir = fetch(args.model).hf_dir if "/" not in args.model else args.model
    ours, hf = run(hf_dir, args.new_tokens, args.repeats)
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
