"""Benchmark: an activation-patching sweep, lminspect vs the same sweep with plain HF forward hooks.

SmolLM2-135M, CPU, fp32, same thread count, both on the same float32 weights (HF loads the
converted dir). The sweep patches one site (``--site``, default resid) from the clean prompt into
the corrupted one at every layer and token position and reads ``logit(A) - logit(B)`` at the
last token. The peer (``hf_patch_reference.patch_sweep``) runs one full forward of the corrupted
prompt per cell; lminspect caches the clean run, runs the shared token prefix once, branches
each layer's batch from the cached corrupted residual and reads the last token's logits only
(docs/lens.md). Repeats alternate the two; medians and the largest difference in the metric
values are printed.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_patch.py --threads 1 --repeats 3``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hf_patch_reference as ref  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--site", default="resid", choices=["resid", "attn", "mlp", "head"])
    ap.add_argument("--clean", default="When Mary and John went to the store, John gave a drink to")
    ap.add_argument("--corrupt", default="When Mary and John went to the store, Mary gave a drink to")
    ap.add_argument("--metric", default="logit_diff: Mary,John")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM

    from lminspect.lens import activation_patching, parse_metric
    from lminspect.models import load_model
    from lminspect.tokenizer import load_tokenizer
    from lminspect.weights import open_store
    from lminspect.weights.fetch import fetch

    hf_dir = fetch("smollm2").hf_dir
    store = open_store(str(hf_dir))
    lm, tok = load_model(store), load_tokenizer(store)
    hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    clean, corrupt = tok.encode(args.clean), tok.encode(args.corrupt)
    metric = parse_metric(args.metric, tok, lm.vocab_size)
    n_head = lm.layers[0].attn.n_head
    print(f"SmolLM2-135M, {args.threads} thread(s), site {args.site}, {len(clean)} tokens, "
          f"{lm.n_layers} layers, metric {metric.describe()}", flush=True)

    ours_t, hf_t = [], []
    ours = theirs = None
    for _ in range(args.repeats):
        t = time.perf_counter()
        ours = activation_patching(lm, clean, corrupt, metric, site=args.site)
        ours_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        theirs = ref.patch_sweep(hf, clean, corrupt, metric, site=args.site, n_heads=n_head)
        hf_t.append(time.perf_counter() - t)
        print(f"  repeat {len(ours_t)}: lminspect {ours_t[-1]:.2f} s, HF hooks {hf_t[-1]:.2f} s", flush=True)
    cells = ours.values.size
    diff = float(abs(torch.as_tensor(ours.values) - theirs.double()).max())
    a, b = statistics.median(ours_t), statistics.median(hf_t)
    print(f"lminspect: {a:.2f} s ({ours.forwards} patched rows in batches, {ours.shared_prefix} shared tokens)")
    print(f"HF hooks:  {b:.2f} s ({cells} forwards)")
    print(f"speed-up {b / a:.2f}x (medians of {args.repeats}); max |metric difference| {diff:.2e}")
    print("times lminspect: " + ", ".join(f"{x:.2f}" for x in ours_t) + "; HF: " + ", ".join(f"{x:.2f}" for x in hf_t))


if __name__ == "__main__":
    main()
