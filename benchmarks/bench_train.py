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

Ablations (``--ablate``): the run is repeated with one optimisation turned off at a time, each
interleaved with nanoGPT again, and one table says what each buys: ``no-fused-adamw`` (torch's
foreach AdamW instead of the fused one), ``no-head-loss`` (logits materialized, then
``F.cross_entropy``, instead of the one-pass head loss), ``compile`` (``--compile``: torch.compile
of the model; the head loss is off under it), ``autocast-bf16`` (``--amp bf16``). The data draw
(``PackedStream.next_batch``) is timed inside every step (its share says what moving it off the
critical path could buy). ``--autocast bf16`` alone trains with bf16 autocast instead of fp32.
``--loss-curve N`` trains a tiny model N steps in float32 and in bf16 autocast and prints both
loss curves side by side.

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


VARIANTS = ("full", "no-fused-adamw", "no-head-loss", "compile", "autocast-bf16")


def _variant(name: str) -> tuple[dict, list]:
    """(TrainConfig overrides, [(object, attribute, replacement)] patches) of an ablation."""
    from lminspect.train import loop

    if name == "no-fused-adamw":
        return {}, [(loop, "_fused_ok", lambda params, kinds: False)]
    if name == "no-head-loss":
        return {}, [(loop, "_fused_head", lambda run: None)]
    if name == "compile":
        return {"compile": True}, []
    if name == "autocast-bf16":
        return {"amp": "bf16"}, []
    return {}, []


class _DataClock:
    """Process seconds spent drawing batches (PackedStream.next_batch), summed per step."""

    def __init__(self) -> None:
        from lminspect.train.data import PackedStream

        self.real = PackedStream.next_batch
        self.seconds = 0.0
        clock = self

        def timed(stream, n):  # noqa: ANN001, ANN202
            c0 = time.process_time()
            try:
                return clock.real(stream, n)
            finally:
                clock.seconds += time.process_time() - c0
        self.timed = timed


def run(steps: int, warmup: int, peers: list, variant: str = "full",
        data: list[float] | None = None) -> list[tuple[float, float]]:
    """Train lminspect for warmup + steps steps, one step of every peer after each; lminspect's
    (wall, CPU) seconds per step, measured from the end of one ``on_step`` callback to the start of
    the next: the whole loop, its stats row and checks included. ``data`` collects each step's
    CPU seconds in the data draw."""
    from lminspect.train import TrainConfig, train
    from lminspect.train.data import PackedStream

    overrides, patches = _variant(variant)
    clock = _DataClock()
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in patches]

    times: list[tuple[float, float]] = []
    mark: list[float] = []

    def after_step(_row: dict) -> None:
        if mark:
            times.append((time.perf_counter() - mark[0], time.process_time() - mark[1]))
            if data is not None:
                data.append(clock.seconds)
        PackedStream.next_batch = clock.real  # the peers' draws are not counted
        for p in peers:
            p.step()
        PackedStream.next_batch = clock.timed
        clock.seconds = 0.0
        mark[:] = [time.perf_counter(), time.process_time()]

    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(exp="gpt2ish", run_dir=f"{d}/run", seq_len=SEQ, batch_size=BATCH, optimizer="adamw",
                          lr=LR, weight_decay=WD, grad_clip=CLIP, max_steps=warmup + steps, eval_every=0,
                          save_every=0, keep_checkpoints=1, model_args=dict(SHAPE), device="cpu",
                          progress=False, **{"amp": "none", **overrides})
        for obj, attr, new in patches:
            setattr(obj, attr, new)
        PackedStream.next_batch = clock.timed
        try:
            train(cfg, on_step=after_step)
        finally:
            PackedStream.next_batch = clock.real
            for obj, attr, old in saved:
                setattr(obj, attr, old)
    return times  # steps 2..: the first step has no start mark (it is part of the warm-up anyway)


def _report(name: str, ts: list[tuple[float, float]]) -> tuple[float, float]:
    wall, cpu = statistics.median(w for w, _ in ts), statistics.median(c for _, c in ts)
    print(f"{name:42s} wall {wall:6.2f} s/step {BATCH * SEQ / wall:6.0f} tok/s | CPU {cpu:6.2f} s/step "
          f"{BATCH * SEQ / cpu:6.0f} tok/s  (wall: {' '.join(f'{w:.2f}' for w, _ in ts)})")
    return wall, cpu


def loss_curves(steps: int) -> None:
    """A tiny gpt2ish trained ``steps`` steps in float32 and in bf16 autocast, same data and seed."""
    from lminspect.train import TrainConfig, train

    curves = {}
    for amp in ("none", "bf16"):
        losses: list[float] = []
        t0 = time.process_time()
        with tempfile.TemporaryDirectory() as d:
            cfg = TrainConfig(exp="gpt2ish", run_dir=f"{d}/run", seq_len=64, batch_size=8, optimizer="adamw",
                              lr=1e-3, weight_decay=WD, grad_clip=CLIP, max_steps=steps, eval_every=0, save_every=0,
                              keep_checkpoints=1, model_args={"n_layer": 2, "n_head": 2, "dim": 64,
                                                              "vocab_size": SHAPE["vocab_size"]},
                              amp=amp, device="cpu", progress=False, seed=0)
            train(cfg, on_step=lambda row, out=losses: out.append(float(row["loss"])))
        curves[amp] = losses, time.process_time() - t0
    (f32, c32), (b16, cb) = curves["none"], curves["bf16"]
    print(f"loss curve, tiny gpt2ish (2x64, seq 64, batch 8, lr 1e-3), {steps} steps: float32 {c32:.1f} CPU s, "
          f"bf16 autocast {cb:.1f} CPU s ({cb / c32:.2f}x)")
    print("step  float32   bf16   diff")
    for i, (a, b) in enumerate(zip(f32, b16, strict=True)):
        if i < 5 or (i + 1) % max(1, steps // 10) == 0 or i == steps - 1:
            print(f"{i + 1:4d}  {a:7.4f} {b:7.4f} {b - a:+.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nanogpt", default=os.environ.get("NANOGPT_MODEL"),
                    help="path of nanoGPT's model.py (default $NANOGPT_MODEL)")
    ap.add_argument("--hf", action="store_true", help="also time HF transformers' GPT2LMHeadModel")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=1, help="untimed first steps (at least 1)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ablate", nargs="?", const=",".join(VARIANTS),
                    help=f"comma-separated variants to time in turn (default all: {', '.join(VARIANTS)})")
    ap.add_argument("--autocast", choices=("none", "bf16"), default="none", help="bf16: lminspect with --amp bf16")
    ap.add_argument("--loss-curve", type=int, metavar="STEPS", help="only the float32 vs bf16 loss curves")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.loss_curve:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU flags: {_cpu_flags()}")
        return loss_curves(args.loss_curve)
    if args.warmup < 1:
        ap.error("--warmup must be at least 1 (lminspect's first step has no start mark)")
    if not args.nanogpt or not Path(args.nanogpt).is_file():
        ap.error("--nanogpt PATH (nanoGPT's model.py) is needed; see this script's docstring for how to get it")
    variants = args.ablate.split(",") if args.ablate else ["autocast-bf16" if args.autocast == "bf16" else "full"]
    if bad := [v for v in variants if v not in VARIANTS]:
        ap.error(f"--ablate: unknown {', '.join(bad)} (choose from {', '.join(VARIANTS)})")
    peers = [NanoGPTPeer(args.nanogpt)] + ([HFPeer()] if args.hf else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU flags: {_cpu_flags()}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"shape {SHAPE}, seq {SEQ}, batch {BATCH}, AdamW wd {WD}, clip {CLIP}, fp32; "
          f"{args.warmup} warm-up + {args.steps} timed steps each, interleaved")
    table = []
    for v in variants:
        for p in peers:
            p.times.clear()
        data: list[float] = []
        li = run(args.steps, args.warmup, peers, v, data)[args.warmup - 1:]
        data = data[args.warmup - 1:]
        li_wall, li_cpu = _report(f"lminspect train --exp gpt2ish [{v}]", li)
        ratios = []
        for p in peers:
            wall, cpu = _report(p.name, p.times[args.warmup:])
            ratios.append(cpu / li_cpu)
            print(f"  ratio lminspect / {p.name.split()[0]}: {wall / li_wall:.2f}x wall, {cpu / li_cpu:.2f}x CPU time")
        table.append((v, li_cpu, statistics.median(data) if data else 0.0, ratios[0]))
    if len(table) > 1:
        full = dict((v, c) for v, c, _, _ in table).get("full")
        print("\n| variant | lminspect CPU s/step | data draw CPU s/step | vs full | nanoGPT / lminspect (CPU, same segment) |")
        print("|---|---|---|---|---|")
        for v, c, d, r in table:
            vs = f"{c / full:.2f}x time" if full else "-"
            print(f"| {v} | {c:.2f} | {d:.3f} ({100 * d / c:.1f}%) | {vs} | {r:.2f}x |")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
