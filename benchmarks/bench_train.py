"""Training throughput: lminspect's training loop (gpt2ish) vs nanoGPT's own model.py (and, with --hf,
HF transformers' GPT2LMHeadModel), steps interleaved in one process.

Same shape as nanoGPT-small (6 layers, 6 heads, d=384, seq 256, batch 8, vocab 50304, biases), AdamW
(weight decay 0.1, gradient clipping at 1.0: nanoGPT's train.py defaults), fp32, the same thread count
and the same token batches (the shipped corpus, packed by lminspect's data pipeline).

lminspect is timed *through* ``lminspect.train.train`` (data draw, forward, backward, grad-norm and
clipping, optimizer step, stats row): after each of its steps the ``on_step`` callback runs one step
of each peer, so the timings alternate (A B A B ...) and share the machine's load. A peer step is
what nanoGPT's train.py does per step: its ``GPT.forward(x, y)`` (loss inside), backward,
``clip_grad_norm_``, the optimizer from ``configure_optimizers`` (non-fused on CPU, as nanoGPT
decides), ``zero_grad(set_to_none=True)``. Warm-up steps are dropped; medians of the rest.

nanoGPT is not part of lminspect; get its model.py from https://github.com/karpathy/nanoGPT, e.g.

    git clone --depth 1 https://github.com/karpathy/nanoGPT /tmp/nanoGPT
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_train.py --nanogpt /tmp/nanoGPT/model.py \\
        [--steps 6] [--warmup 1] [--threads 1] [--hf]

(``--nanogpt`` defaults to $NANOGPT_MODEL.) Each step is timed in wall and in process CPU time; on a
shared, loaded machine the CPU time is the steadier figure (the header and footer print the load
average). Compare ratios from one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path

SHAPE = {"n_layer": 6, "n_head": 6, "dim": 384, "vocab_size": 50304}
SEQ, BATCH = 256, 8
LR, WD, CLIP = 3e-4, 0.1, 1.0


def _cpu_flags() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0].split())
    except (OSError, IndexError):
        return "unknown"
    return " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "none of avx2/avx512"


def _load_nanogpt(path: str):
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class NanoGPTPeer:
    name = "nanoGPT model.py + configure_optimizers"

    def __init__(self, path: str) -> None:
        import contextlib
        import io

        import torch

        from lminspect.train.data import PackedStream, load_train_tokenizer

        ng = _load_nanogpt(path)
        torch.manual_seed(0)
        with contextlib.redirect_stdout(io.StringIO()):  # its parameter-count prints
            self.model = ng.GPT(ng.GPTConfig(block_size=SEQ, vocab_size=SHAPE["vocab_size"], n_layer=SHAPE["n_layer"],
                                             n_head=SHAPE["n_head"], n_embd=SHAPE["dim"], dropout=0.0, bias=True))
            self.opt = self.model.configure_optimizers(WD, LR, (0.9, 0.95), "cpu")
        self.model.train()
        self.stream = PackedStream("builtin", load_train_tokenizer("default"), SEQ)
        self.times: list[tuple[float, float]] = []  # (wall, CPU) seconds per step

    def step(self) -> None:
        import torch

        t0, c0 = time.perf_counter(), time.process_time()
        b = self.stream.next_batch(BATCH)
        x, y = b[:, :-1].contiguous(), b[:, 1:].contiguous()
        _, loss = self.model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.times.append((time.perf_counter() - t0, time.process_time() - c0))


class HFPeer:
    name = "HF transformers GPT2LMHeadModel (sdpa) + AdamW"

    def __init__(self) -> None:
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel

        from lminspect.train.data import PackedStream, load_train_tokenizer

        torch.manual_seed(0)
        cfg = GPT2Config(vocab_size=SHAPE["vocab_size"], n_positions=SEQ, n_embd=SHAPE["dim"],
                         n_layer=SHAPE["n_layer"], n_head=SHAPE["n_head"], resid_pdrop=0.0, embd_pdrop=0.0,
                         attn_pdrop=0.0)
        cfg._attn_implementation = "sdpa"
        self.model = GPT2LMHeadModel(cfg)
        self.model.train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR, weight_decay=WD)
        self.stream = PackedStream("builtin", load_train_tokenizer("default"), SEQ)
        self.times: list[tuple[float, float]] = []  # (wall, CPU) seconds per step

    def step(self) -> None:
        import torch
        import torch.nn.functional as F

        t0, c0 = time.perf_counter(), time.process_time()
        b = self.stream.next_batch(BATCH)
        x, y = b[:, :-1], b[:, 1:]
        logits = self.model(input_ids=x).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.times.append((time.perf_counter() - t0, time.process_time() - c0))


def run(steps: int, warmup: int, peers: list) -> list[tuple[float, float]]:
    """Train lminspect for warmup + steps steps, one step of every peer after each; lminspect's
    (wall, CPU) seconds per step, measured from the end of one ``on_step`` callback to the start of
    the next: the whole loop, its stats row and checks included."""
    from lminspect.train import TrainConfig, train

    times: list[tuple[float, float]] = []
    mark: list[float] = []

    def after_step(_row: dict) -> None:
        if mark:
            times.append((time.perf_counter() - mark[0], time.process_time() - mark[1]))
        for p in peers:
            p.step()
        mark[:] = [time.perf_counter(), time.process_time()]

    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(exp="gpt2ish", run_dir=f"{d}/run", seq_len=SEQ, batch_size=BATCH, optimizer="adamw",
                          lr=LR, weight_decay=WD, grad_clip=CLIP, max_steps=warmup + steps, eval_every=0,
                          save_every=0, keep_checkpoints=1, model_args=dict(SHAPE), amp="none", device="cpu",
                          progress=False)
        train(cfg, on_step=after_step)
    return times  # steps 2..: the first step has no start mark (it is part of the warm-up anyway)


def _report(name: str, ts: list[tuple[float, float]]) -> tuple[float, float]:
    wall, cpu = statistics.median(w for w, _ in ts), statistics.median(c for _, c in ts)
    print(f"{name:42s} wall {wall:6.2f} s/step {BATCH * SEQ / wall:6.0f} tok/s | CPU {cpu:6.2f} s/step "
          f"{BATCH * SEQ / cpu:6.0f} tok/s  (wall: {' '.join(f'{w:.2f}' for w, _ in ts)})")
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nanogpt", default=os.environ.get("NANOGPT_MODEL"),
                    help="path of nanoGPT's model.py (default $NANOGPT_MODEL)")
    ap.add_argument("--hf", action="store_true", help="also time HF transformers' GPT2LMHeadModel")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1, help="untimed first steps (at least 1)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.warmup < 1:
        ap.error("--warmup must be at least 1 (lminspect's first step has no start mark)")
    if not args.nanogpt or not Path(args.nanogpt).is_file():
        ap.error("--nanogpt PATH (nanoGPT's model.py) is needed; see this script's docstring for how to get it")
    import torch

    torch.set_num_threads(args.threads)
    peers = [NanoGPTPeer(args.nanogpt)] + ([HFPeer()] if args.hf else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU flags: {_cpu_flags()}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"shape {SHAPE}, seq {SEQ}, batch {BATCH}, AdamW wd {WD}, clip {CLIP}, fp32; "
          f"{args.warmup} warm-up + {args.steps} timed steps each, interleaved")
    li = run(args.steps, args.warmup, peers)[args.warmup - 1:]
    li_wall, li_cpu = _report("lminspect train --exp gpt2ish", li)
    for p in peers:
        wall, cpu = _report(p.name, p.times[args.warmup:])
        print(f"  ratio lminspect / {p.name.split()[0]}: {wall / li_wall:.2f}x wall, {cpu / li_cpu:.2f}x CPU time")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
