"""Activation-statistics overhead: hooked forward + accumulators vs a plain forward, same batches.

SmolLM2-135M (fetched once), the shipped corpus cut into ``--seq-len`` chunks with the model's
tokenizer, ``--batch-size`` rows per batch, all default sites (resid_out, attn_out, mlp_out,
mlp_hidden at every one of the 30 layers = 120 sites). For each batch the plain forward and the
collecting forward (``lm.hooks(SiteHook)`` - exactly the callback ``collect`` uses: one
cache-blocked reduction pass per site in torch, Chan-Pebay merges into float64 numpy) run back to back, in alternating order, under
``torch.inference_mode``; warm-up batches are dropped and medians of tokens/s are reported, plus
the median of the per-batch time ratios (the pairs run back to back, so that one is the least
disturbed by other load on a shared machine).
``--e2e`` also times a whole ``collect()`` call (tokenizing, snapshots, results dir) on the same
number of tokens.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_activations.py --batches 10 --warmup 2 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def batches(tok, seq_len: int, batch_size: int, n: int):
    import torch

    from lminspect.activations.collect import iter_chunks

    it = iter_chunks("builtin", tok, seq_len, split="train", text_field="text")
    out = []
    while len(out) < n:
        rows = []
        while len(rows) < batch_size:
            d, off, ids = next(it)
            if len(ids) == seq_len:  # full rows: the comparison is about compute, not padding
                rows.append((d, off, ids))
        ids = torch.tensor([r[2] for r in rows], dtype=torch.long)
        import numpy as np

        pos = np.concatenate([np.stack([np.full(seq_len, d), np.arange(off, off + seq_len)], 1) for d, off, _ in rows])
        out.append((ids, pos.astype(np.int64)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--e2e", action="store_true")
    ap.add_argument("--floor", action="store_true", help="also time a hooked forward with a no-op callback")
    a = ap.parse_args()

    import torch

    from lminspect.activations.collect import SiteHook, resolve_sites
    from lminspect.models import load_model
    from lminspect.tokenizer import load_tokenizer
    from lminspect.weights import open_store
    from lminspect.weights.fetch import fetch

    torch.set_num_threads(a.threads)
    path = fetch("smollm2").hf_dir
    store = open_store(path)
    lm = load_model(store)
    tok = load_tokenizer(store)
    sites = resolve_sites(["resid", "attn_out", "mlp_out", "mlp_hidden"], lm.n_layers)
    data = batches(tok, a.seq_len, a.batch_size, a.warmup + a.batches)
    accs: dict = {}
    hook = SiteHook(accs, outlier_k=6.0)
    plain, coll, noop = [], [], []
    ntok = a.batch_size * a.seq_len
    with torch.inference_mode():
        for i, (ids, pos) in enumerate(data):
            def run_plain(ids=ids) -> float:
                t = time.perf_counter()
                lm(ids)
                return time.perf_counter() - t

            def run_coll(ids=ids, pos=pos) -> float:
                hook.ctx.update(idx=None, rows=pos, row0=0)
                t = time.perf_counter()
                with lm.hooks(hook, sites):
                    lm(ids)
                return time.perf_counter() - t

            def run_noop(ids=ids) -> float:
                t = time.perf_counter()
                with lm.hooks(lambda name, t: None, sites):
                    lm(ids)
                return time.perf_counter() - t

            if i % 2:
                tc, tp = run_coll(), run_plain()
            else:
                tp, tc = run_plain(), run_coll()
            if a.floor and i >= a.warmup:
                noop.append(ntok / run_noop())
            if i >= a.warmup:
                plain.append(ntok / tp)
                coll.append(ntok / tc)
            print(f"batch {i}: plain {ntok / tp:8.1f} tok/s  collect {ntok / tc:8.1f} tok/s", flush=True)
    mp, mc = statistics.median(plain), statistics.median(coll)
    print(f"SmolLM2-135M, {len(sites)} sites, batch {a.batch_size}x{a.seq_len}, {a.threads} threads, "
          f"{len(plain)} batches (after {a.warmup} warm-up)")
    print(f"plain forward : {mp:8.1f} tok/s (median)")
    print(f"collect       : {mc:8.1f} tok/s (median)")
    if noop:
        mn = statistics.median(noop)
        print(f"no-op hooks   : {mn:8.1f} tok/s (median; {100 * (mp / mn - 1):.1f}% = the hooked forward itself)")
    print(f"overhead      : {100 * (mp / mc - 1):.1f}% time per token (ratio of the medians)")
    ratios = sorted(p / c for p, c in zip(plain, coll, strict=True))
    print(f"per batch     : {100 * (statistics.median(ratios) - 1):.1f}% median of the back-to-back pairs "
          f"(range {100 * (ratios[0] - 1):.0f}..{100 * (ratios[-1] - 1):.0f}%)")
    if a.e2e:
        from lminspect.activations import collect

        with tempfile.TemporaryDirectory() as d:
            n = a.batches * ntok
            t = time.perf_counter()
            collect(path, f"{d}/r", tokens=n, seq_len=a.seq_len, batch_size=a.batch_size, progress=False)
            el = time.perf_counter() - t
        print(f"collect() end-to-end: {n} tokens in {el:.1f} s = {n / el:.1f} tok/s (incl. model load, tokenizing, "
              f"snapshots)")


if __name__ == "__main__":
    main()
