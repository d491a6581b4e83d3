"""Training throughput: lminspect's training loop (gpt2ish) vs HF transformers GPT2LMHeadModel.

Same shape as nanoGPT-small (6 layers, 6 heads, d=384, seq 256, batch 8, vocab 50304), AdamW,
fp32, CPU, the same thread count and the same token batches (the shipped corpus, packed by
lminspect's data pipeline). lminspect is timed *through* ``lminspect.train.train`` (data draw,
forward, backward, grad-norm, optimizer step, stats row); HF runs a plain AdamW loop. Both
exclude warm-up steps; medians of the per-step times.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_train.py [--steps 5] [--warmup 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

SHAPE = {"n_layer": 6, "n_head": 6, "dim": 384, "vocab_size": 50304}
SEQ, BATCH = 256, 8


def bench_lminspect(steps: int, warmup: int) -> list[float]:
    from lminspect.train import TrainConfig, load_run, train

    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(exp="gpt2ish", run_dir=f"{d}/run", seq_len=SEQ, batch_size=BATCH, optimizer="adamw",
                          lr=3e-4, max_steps=warmup + steps, eval_every=0, save_every=0, keep_checkpoints=1,
                          model_args=dict(SHAPE), amp="none", device="cpu", progress=False)
        train(cfg)
        run = load_run(f"{d}/run")
        tok_s = run.columns["tok_s"][warmup:]
    return [BATCH * SEQ / t for t in tok_s]  # seconds per step


def bench_hf(steps: int, warmup: int) -> list[float]:
    import torch
    import torch.nn.functional as F
    from transformers import GPT2Config, GPT2LMHeadModel

    from lminspect.train.data import PackedStream, load_train_tokenizer

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=SHAPE["vocab_size"], n_positions=SEQ, n_embd=SHAPE["dim"],
                     n_layer=SHAPE["n_layer"], n_head=SHAPE["n_head"], resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0)
    cfg._attn_implementation = "sdpa"
    model = GPT2LMHeadModel(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0)
    stream = PackedStream("builtin", load_train_tokenizer("default"), SEQ)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        b = stream.next_batch(BATCH)
        x, y = b[:, :-1], b[:, 1:]
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; shape {SHAPE}, seq {SEQ}, "
          f"batch {BATCH}, AdamW fp32; {args.warmup} warm-up + {args.steps} timed steps each")
    tok = BATCH * SEQ
    li = bench_lminspect(args.steps, args.warmup)
    li_med = statistics.median(li)
    print(f"lminspect train --exp gpt2ish:          {li_med:.2f} s/step  {tok / li_med:7.0f} tok/s", flush=True)
    hf = bench_hf(args.steps, args.warmup)
    hf_med = statistics.median(hf)
    print(f"HF transformers GPT2LMHeadModel (sdpa): {hf_med:.2f} s/step  {tok / hf_med:7.0f} tok/s")
    print(f"ratio lminspect / HF: {hf_med / li_med:.2f}x")


if __name__ == "__main__":
    main()
