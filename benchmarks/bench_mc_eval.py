"""Multiple-choice scoring speed: lminspect vs the REAL lm-evaluation-harness, same items, same weights.

lm-eval (``pip install lm-eval``; benchmark-only) runs its own pipeline offline on a local task
YAML + jsonl (``benchmarks/lmeval_peer.py``) with its ``HFLM`` on the SmolLM2 HF directory, at
``--batch_size`` 1, 8 and auto; lminspect's ``evaluate_mc`` runs at batch sizes 1, 8 and auto on
the same items and weights, in the same process, with the same torch thread count. Timed: the
scoring only (lm-eval: inside ``HFLM.loglikelihood``; lminspect: ``evaluate_mc``), wall and
process CPU seconds (CPU seconds are the fairer number on a loaded machine). Each config runs
``--repeats`` times; medians are printed, then ratios against lm-eval's best batch size and the
largest per-ending log-likelihood difference.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_mc_eval.py --items 40 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _items(spec: str, n: int, ctx_sentences: int = 3):
    from lminspect.evals.mc import hellaswag_item, load_mc

    if spec == "cloze":
        from lminspect.documents import read_documents
        from lminspect.evals.cloze import make_cloze

        return [hellaswag_item(r, k) for k, r in enumerate(make_cloze(read_documents("builtin"), n=n,
                                                                        ctx_sentences=ctx_sentences))]
    return load_mc(spec, limit=n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="HF dir, or 'smollm2' (the fetched real model)")
    ap.add_argument("--items", type=int, default=40)
    ap.add_argument("--eval", default="cloze", help="MC .jsonl (HellaSwag format), or 'cloze' (shipped corpus)")
    ap.add_argument("--ctx-sentences", type=int, default=3,
                    help="cloze items: context sentences (1 is near HellaSwag's lengths, 3 is longer)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--sizes", default="1,8,auto", help="lm-eval batch sizes (lminspect always runs 1, 8 and auto)")
    args = ap.parse_args()

    import lmeval_peer
    import torch

    from lminspect.evals.mc import evaluate_mc
    from lminspect.models import load_model
    from lminspect.tokenizer import load_tokenizer
    from lminspect.weights import open_store

    if not lmeval_peer.available():
        sys.exit("lm-eval is not installed: pip install lm-eval")
    torch.set_num_threads(args.threads)
    if args.model == "smollm2":
        from lminspect.weights.fetch import fetch

        path = str(fetch("smollm2").hf_dir)
    else:
        path = args.model
    items = _items(args.eval, args.items, args.ctx_sentences)
    store = open_store(path)
    model, tok = load_model(store), load_tokenizer(store)
    sizes = [s.strip() for s in args.sizes.split(",")]

    rows: dict[str, tuple[float, float]] = {}  # name -> median (wall, cpu)
    ref = None
    for bs in sizes:
        lm = lmeval_peer.load_hflm(path, bs if bs == "auto" else int(bs))
        runs = [lmeval_peer.run(lm, items) for _ in range(args.repeats)]
        if bs == "auto":  # its probe: 5 forwards of max_batch_size (64) x the longest request, every call
            print(f"(lm-eval auto picked batch size {runs[-1].batch_size}; its probe took "
                  f"{runs[-1].probe_seconds:.1f} s wall, {runs[-1].probe_cpu_seconds:.1f} CPU s, left out of "
                  f"the figures below in lm-eval's favour)", flush=True)
        ref = runs[-1]
        rows[f"lm-eval --batch_size {bs}"] = (statistics.median(r.seconds for r in runs),
                                             statistics.median(r.cpu_seconds for r in runs))
        print(f"  lm-eval --batch_size {bs}: wall {[round(r.seconds, 2) for r in runs]} "
              f"CPU {[round(r.cpu_seconds, 2) for r in runs]}", flush=True)
        del lm
    evaluate_mc(model, tok, items[:2])  # warm-up
    worst = 0.0
    for bs in ("1", "8", "auto"):
        runs = [evaluate_mc(model, tok, items, batch_size=None if bs == "auto" else int(bs))
                for _ in range(args.repeats)]
        rows[f"lminspect --batch-size {bs}"] = (statistics.median(r.seconds for r in runs),
                                               statistics.median(r.cpu_seconds for r in runs))
        print(f"  lminspect --batch-size {bs}: wall {[round(r.seconds, 2) for r in runs]} "
              f"CPU {[round(r.cpu_seconds, 2) for r in runs]}", flush=True)
        worst = max(worst, max(abs(a - b) for s, r in zip(runs[-1].items, ref.lls, strict=True)
                               for a, b in zip(s.lls, r, strict=True)))
    n = len(items)
    best_peer = min((v for k, v in rows.items() if k.startswith("lm-eval")), key=lambda v: v[1])
    n_ctx = statistics.mean(len(tok.encode(it.ctx)) for it in items)
    n_end = statistics.mean(len(tok.encode(" " + e)) for it in items for e in it.endings)
    print(f"model {args.model}, {n} items ({args.eval}; mean tokens: context {n_ctx:.0f}, ending {n_end:.0f}), "
          f"torch threads {args.threads}, "
          f"median of {args.repeats}")
    print(f"{'':30} {'wall s':>8} {'cpu s':>8} {'items/s':>8} {'x best lm-eval (cpu)':>21}")
    for name, (wall, cpu) in rows.items():
        print(f"{name:30} {wall:8.2f} {cpu:8.2f} {n / wall:8.2f} {best_peer[1] / cpu:20.2f}x")
    print(f"max |delta ll| per ending vs lm-eval: {worst:.2e}")


if __name__ == "__main__":
    main()
