"""Batched multiple-choice scoring on an accelerator: batch sizes, and batched == one-at-a-time.

Runs where there is no SmolLM2 file to read: the model is SmolLM2-135M's shape (30 layers, 576
wide, 49k vocabulary) with random weights, which costs the same to run, and the items are random
token sequences of HellaSwag-like lengths (a context, four endings). Prints, per batch size, the
seconds and items/s of ``evaluate_mc`` (the scoring only, device synchronised), then checks that
every batch size gives the same per-ending log-likelihoods as one item at a time (<= 1e-4) and as
one full forward per ending (``mode="full"``, the harness way).

    python benchmarks/bench_mc_device.py --device cuda --items 200 --sizes 1,8,32,auto
"""

from __future__ import annotations

import argparse
import random
import time


def _items(n: int, vocab: int, seed: int):
    """Random items: word ids as text, so the encoder below maps text back to the same ids."""
    from lminspect.evals.mc import MCItem

    rng = random.Random(seed)

    def words(k: int) -> str:
        return " ".join(str(rng.randrange(1, vocab)) for _ in range(k))

    return [MCItem(words(rng.randint(30, 60)), [words(rng.randint(12, 30)) for _ in range(4)], rng.randrange(4))
            for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--sizes", default="1,8,32,auto")
    ap.add_argument("--check", type=int, default=24, help="items checked against one-at-a-time and full mode")
    args = ap.parse_args()

    import torch

    from lminspect.evals.mc import evaluate_mc
    from lminspect.models.llama import Llama, LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, dim=576, n_layer=30, n_head=9, n_kv_head=3, ffn_dim=1536,
                      context_length=2048, tie_embeddings=True, rope_theta=100000.0)
    model = Llama(cfg).to(args.device).eval()

    def encode(text: str) -> list[int]:
        return [int(w) for w in text.split()]

    items = _items(args.items, cfg.vocab_size, 0)
    evaluate_mc(model, encode, items[:4], bos=0)  # warm-up (kernels, allocator)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(f"{torch.cuda.get_device_name() if args.device.startswith('cuda') else args.device}, "
          f"SmolLM2-shaped model (random weights), {len(items)} items, float32")
    results = {}
    for bs in args.sizes.split(","):
        size = None if bs == "auto" else int(bs)
        sync()
        t0 = time.perf_counter()
        res = evaluate_mc(model, encode, items, batch_size=size, bos=0)
        sync()
        dt = time.perf_counter() - t0
        results[bs] = res
        print(f"batch {bs:>5}: {dt:7.2f} s  {len(items) / dt:8.1f} items/s  ({res.layer_calls} layer calls)")
    few = items[:args.check]
    one = evaluate_mc(model, encode, few, batch_size=1, bos=0)
    full = evaluate_mc(model, encode, few, mode="full", bos=0)
    worst = {bs: max(abs(a - b) for s, o in zip(r.items[:len(few)], one.items, strict=True)
                     for a, b in zip(s.lls, o.lls, strict=True)) for bs, r in results.items()}
    worst_full = max(abs(a - b) for s, f in zip(one.items, full.items, strict=True)
                     for a, b in zip(s.lls, f.lls, strict=True))
    print("max |delta ll| vs batch 1: " + ", ".join(f"{bs}: {w:.1e}" for bs, w in worst.items())
          + f"; batch 1 vs one full forward per ending: {worst_full:.1e}")


if __name__ == "__main__":
    main()
