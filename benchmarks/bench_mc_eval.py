"""Multiple-choice scoring speed: lminspect's shared-context scoring vs the harness way.

The peer is what lm-evaluation-harness's HFLM does for a ``multiple_choice`` task: one full
``ctx + " " + ending`` forward per ending with HF transformers (batch 1 here, as
``--batch_size 1``; no prefix sharing). lminspect runs the context once into a KV cache and
all endings as one padded batch against it. Same items, same model weights, same thread
count, one run each; per-ending log-likelihoods are checked to agree.

    OMP_NUM_THREADS=1 python benchmarks/bench_mc_eval.py [--model smollm2] [--items 20]
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="HF dir or fetched name (default smollm2)")
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--eval", default="cloze", help="MC .jsonl, or 'cloze' (built from the shipped corpus)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from lminspect.evals.mc import encode_pair, evaluate_mc, hellaswag_item, load_mc, make_encoder
    from lminspect.models import load_model
    from lminspect.tokenizer import load_tokenizer
    from lminspect.weights import open_store

    torch.set_num_threads(args.threads)
    if args.model == "smollm2":
        from lminspect.weights.fetch import fetch

        path = str(fetch("smollm2").hf_dir)
    else:
        path = args.model
    if args.eval == "cloze":
        from lminspect.evals.cloze import make_cloze, read_documents

        items = [hellaswag_item(r, k) for k, r in enumerate(make_cloze(read_documents("builtin"), n=args.items))]
    else:
        items = load_mc(args.eval, limit=args.items)

    store = open_store(path)
    model = load_model(store)
    tok = load_tokenizer(store)
    encode = make_encoder(tok)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    # warm-up both (first-call allocations, kernels)
    evaluate_mc(model, tok, items[:1])
    with torch.inference_mode():
        hf(torch.tensor([encode(items[0].ctx)]))

    res = evaluate_mc(model, tok, items, mode="shared")

    t0 = time.perf_counter()
    hf_lls = []
    with torch.inference_mode():
        for item in items:
            row = []
            for e in item.endings:
                ctx, cont = encode_pair(encode, item.ctx, " " + e)
                logits = hf(torch.tensor([ctx + cont])).logits[0, len(ctx) - 1 : -1].float()
                lp = torch.log_softmax(logits, -1).gather(1, torch.tensor(cont)[:, None]).sum()
                row.append(float(lp))
            hf_lls.append(row)
    hf_s = time.perf_counter() - t0

    worst = max(abs(a - b) for s, r in zip(res.items, hf_lls, strict=True)
                for a, b in zip(s.lls, r, strict=True))
    hf_acc = sum(max(range(len(r)), key=r.__getitem__) == it.label for r, it in zip(hf_lls, items, strict=True))
    n = len(items)
    print(f"model {args.model}, {n} items x {len(items[0].endings)} endings, torch threads {args.threads}")
    print(f"lminspect shared-context : {res.seconds:7.2f} s  {n / res.seconds:6.2f} items/s  acc {res.acc:.3f}")
    print(f"HF harness way (HFLM)    : {hf_s:7.2f} s  {n / hf_s:6.2f} items/s  acc {hf_acc / n:.3f}")
    print(f"speed-up                 : {hf_s / res.seconds:.2f}x   (max |delta ll| {worst:.2e})")


if __name__ == "__main__":
    main()
