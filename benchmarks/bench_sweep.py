"""Sweep speed: the 13 presets scored sharing their layer calls vs 13 separate evaluations.

Same items, same model, same batching (``--batch-size``, default auto), same thread count, one
process: ``run_sweep(separate=True)`` (``evaluate_mc`` once per plan) against ``run_sweep()``
(one prefix tree of the plans' calls per batch). Prints layer calls run vs named, wall and
process-CPU seconds (medians of ``--repeats``), the ratio, and checks the scores are identical.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_sweep.py --items 200
"""

from __future__ import annotations

import argparse
import os
import statistics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2", help="model ref (default: the fetched SmolLM2)")
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--eval", default="cloze", help="MC .jsonl (HellaSwag format), or 'cloze' (shipped corpus)")
    ap.add_argument("--plans", default="presets")
    ap.add_argument("--batch-size", type=int, default=0, help="items per forward; 0 = auto")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    import torch

    from lminspect.evals.mc import hellaswag_item, load_mc
    from lminspect.evals.sweep import run_sweep
    from lminspect.models import load_model
    from lminspect.stitch import load_plans
    from lminspect.tokenizer import load_tokenizer
    from lminspect.weights import open_store

    torch.set_num_threads(args.threads)
    store = open_store(args.model)
    model, tok = load_model(store), load_tokenizer(store)
    if args.eval == "cloze":
        from lminspect.documents import read_documents
        from lminspect.evals.cloze import make_cloze

        items = [hellaswag_item(r, k) for k, r in enumerate(make_cloze(read_documents("builtin"), n=args.items))]
    else:
        items = load_mc(args.eval, limit=args.items)
    plans = load_plans(args.plans, model.n_layers)
    bs = args.batch_size or None
    runs = {"separate": [], "shared": []}
    for _ in range(args.repeats):
        runs["separate"].append(run_sweep(model, tok, items, plans, batch_size=bs, separate=True))
        runs["shared"].append(run_sweep(model, tok, items, plans, batch_size=bs))
    sep, sh = runs["separate"][-1], runs["shared"][-1]
    same = all([s.lls for s in sep.results[n].items] == [s.lls for s in sh.results[n].items] for n in plans)
    med = {k: (statistics.median(r.seconds for r in v), statistics.median(r.cpu_seconds for r in v))
           for k, v in runs.items()}
    print(f"{len(plans)} plans x {len(items)} items ({args.eval}), model {args.model}, torch threads "
          f"{args.threads}, batch {'auto' if bs is None else bs}, median of {args.repeats}")
    print(f"{'':10} {'layer calls':>12} {'wall s':>8} {'cpu s':>8}")
    for k, r in (("separate", sep), ("shared", sh)):
        print(f"{k:10} {r.calls_run:12d} {med[k][0]:8.1f} {med[k][1]:8.1f}")
    print(f"calls named {sh.calls_named}, run {sh.calls_run} ({sh.calls_named / sh.calls_run:.2f}x fewer); "
          f"speed-up wall {med['separate'][0] / med['shared'][0]:.2f}x, cpu {med['separate'][1] / med['shared'][1]:.2f}x; "
          f"scores identical: {same}")


if __name__ == "__main__":
    main()
