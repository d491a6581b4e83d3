"""The training loop behind ``lminspect train``.

One function, :func:`train`, driven by a :class:`TrainConfig`. Design choices:

- Gradient accumulation: ``batch_size`` sequences per optimizer step, processed in
  ``mini_batch_size`` chunks; each chunk's mean loss is weighted by its share so the
  gradient equals the full batch's mean-loss gradient.
- Data parallel: under ``torchrun`` (env ``RANK``/``WORLD_SIZE``) every rank reads the
  same packed stream and takes its own slice of each global batch, so the data position
  is identical everywhere and resuming needs no per-rank state. Only rank 0 writes.
- Exact resume: a checkpoint holds the model, optimizer, RNG and data position as of
  the end of a completed step; a resumed run repeats the uninterrupted run's losses.
- Failures: a NaN/inf loss stops *before* the optimizer step (the last checkpoint stays
  good); Ctrl-C finishes nothing half-way, saves the last completed step and returns.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lminspect.errors import UserError

DEFAULT_LR = 6e-4  # lmplay: Adagrad, fixed lr 0.0006, no weight decay


@dataclass
class TrainConfig:
    exp: str = "gpt2ish"
    data: str | None = None  # one-step plan over this source (see lminspect.train.data)
    plan: str | None = None  # built-in plan name or JSON file
    run_dir: str | None = None  # default runs/<exp>
    resume: bool = False
    device: str = "auto"  # auto -> cuda when available, else cpu
    amp: str = "auto"  # none | bf16 | fp16 | auto (bf16 on cuda, none elsewhere)
    batch_size: int = 8  # sequences per optimizer step (global, over all ranks)
    mini_batch_size: int | None = None  # sequences per forward/backward; None = batch_size per rank
    lr: float | None = None  # None -> experiment default, else 6e-4
    optimizer: str | None = None  # adagrad (default) | adamw
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # 0 = no clipping (the norm is still logged)
    seq_len: int = 256
    max_steps: int | None = None
    max_tokens: int | None = None
    seed: int = 0
    compile: bool = False
    eval_every: int = 100  # steps; 0 = never
    eval_batches: int = 4  # mini-batches of held-out data per evaluation
    save_every: int = 200  # steps; 0 = only at the end
    keep_checkpoints: int = 2
    model_args: dict[str, Any] = field(default_factory=dict)  # passed to the experiment's model_factory
    load_plugins: bool | None = None
    progress: bool | None = None  # None -> only when stdout is a terminal
    # ordered training (seed 001, lminspect.train.ordered): feed documents sorted by a metadata column
    order_by: str | None = None  # metadata column (e.g. ppl); None with order=shuffle: random order
    order: str | None = None  # asc | desc | shuffle | shuffle-within-buckets (None: asc when order_by)
    metadata: str | None = None  # parquet from `lminspect data metadata`

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    tokens: int
    losses: list[float]
    status: str  # done | interrupted
    checkpoint: Path | None


# ---------------------------------------------------------------- distributed


def _dist_setup(device: str) -> tuple[int, int, bool]:
    """(rank, world, initialised_here): join the process group torchrun describes in the env."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), True


def _resolve_device(device: str, rank: int, world: int) -> str:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine")
    return device


# ---------------------------------------------------------------- helpers


def _make_optimizer(name: str, params, lr: float, weight_decay: float):
    import torch

    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise UserError(f"--optimizer {name!r}: choose adagrad or adamw")


def _rng_state(device: str) -> dict[str, Any]:
    import torch

    st = {"torch": torch.get_rng_state()}
    if device.startswith("cuda"):
        st["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return st


def _set_rng_state(st: dict[str, Any], device: str) -> None:
    import torch

    if "torch" in st:
        torch.set_rng_state(st["torch"])
    if "cuda" in st and device.startswith("cuda"):
        torch.cuda.set_rng_state(st["cuda"], torch.device(device))


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))


def _check_config(cfg: TrainConfig) -> None:
    from lminspect.train.guard import validate_train_config

    validate_train_config(cfg)
    for name in ("batch_size", "seq_len"):
        if getattr(cfg, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive")
    if cfg.mini_batch_size is not None and cfg.mini_batch_size <= 0:
        raise UserError("--mini-batch-size must be positive")
    if cfg.lr is not None and not cfg.lr > 0:
        raise UserError(f"--lr must be positive, got {cfg.lr}")
    if cfg.amp not in ("auto", "none", "bf16", "fp16"):
        raise UserError(f"--amp {cfg.amp!r}: choose none, bf16 or fp16")


# ---------------------------------------------------------------- the loop


def train(cfg: TrainConfig, on_step: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train (or resume) a run; returns when the budget is spent or on Ctrl-C.

    ``on_step(row)`` is called on rank 0 after every step with its stats row; raising
    ``KeyboardInterrupt`` from it behaves exactly like Ctrl-C (tests use this).
    """
    import torch
    import torch.nn.functional as F

    from lminspect.experiments import get_experiment
    from lminspect.experiments.base import export_config, export_state_dict
    from lminspect.fsutil import atomic_write_text
    from lminspect.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    from lminspect.train.data import PackedStream, load_train_tokenizer
    from lminspect.train.guard import check_state_fits, read_saved_config
    from lminspect.train.plans import load_plan
    from lminspect.train.runlog import StatsWriter

    run_dir = Path(cfg.run_dir or Path("runs") / cfg.exp)
    ckpt = None
    if cfg.resume:
        saved = read_saved_config(run_dir)
        # the saved run defines everything; a few flags may be changed on resume
        overrides = {k: getattr(cfg, k) for k in ("max_steps", "max_tokens", "device", "progress",
                                                  "load_plugins")}
        cfg = TrainConfig.from_dict({**saved, **{k: v for k, v in overrides.items() if v is not None},
                                     "run_dir": str(run_dir), "resume": True})
        ckpt = latest_checkpoint(run_dir, warn=True)
    elif (run_dir / "stats.jsonl").is_file() and (run_dir / "stats.jsonl").stat().st_size > 0:
        raise UserError(f"run directory {run_dir} already holds a run; use --resume or another --run-dir")
    _check_config(cfg)

    rank, world, own_group = _dist_setup(cfg.device if cfg.device != "auto" else
                                         ("cuda" if torch.cuda.is_available() else "cpu"))
    device = _resolve_device(cfg.device, rank, world)
    is_main = rank == 0
    if cfg.batch_size % world:
        raise UserError(f"--batch-size {cfg.batch_size} is not divisible by the {world} processes")
    local_bs = cfg.batch_size // world
    mini = min(cfg.mini_batch_size or local_bs, local_bs)
    amp = cfg.amp if cfg.amp != "auto" else ("bf16" if device.startswith("cuda") else "none")
    dev_type = "cuda" if device.startswith("cuda") else "cpu"

    exp = get_experiment(cfg.exp, cfg.load_plugins)
    tokenizer = load_train_tokenizer(exp.tokenizer)
    plan = load_plan(cfg.plan, cfg.data)
    max_seq = max([s.seq_len or cfg.seq_len for s in plan.steps])
    lr = cfg.lr if cfg.lr is not None else exp.defaults.get("lr", DEFAULT_LR)
    opt_name = cfg.optimizer or exp.defaults.get("optimizer", "adagrad")

    torch.manual_seed(cfg.seed)
    model_args = dict(cfg.model_args)
    vocab = int(model_args.pop("vocab_size", tokenizer.vocab_size))  # may pad the vocab (e.g. 50304)
    if vocab < tokenizer.vocab_size:
        raise UserError(f"--set vocab_size={vocab} is smaller than the tokenizer's {tokenizer.vocab_size}")
    model = exp.build(vocab, max_seq, **model_args).to(device)
    # growing experiment (lminspect.grow.schedule): growth events, one param group per generation
    growth = getattr(model, "lminspect_growth", None)
    if growth is not None and (world > 1 or cfg.compile):
        raise UserError("the growing experiment replaces the model mid-run: not supported with "
                        "--compile or several processes")

    def make_opt(params):
        return _make_optimizer(opt_name, params, lr, cfg.weight_decay)

    def opt_params(m):
        if growth is not None:
            return growth.param_groups(m, lr)
        return [p for p in m.parameters() if p.requires_grad]

    optimizer = make_opt(opt_params(model))
    state: dict[str, Any] = {"step": 0, "tokens": 0, "plan_step": 0, "step_tokens": 0,
                             "data": None, "elapsed": 0.0}
    if ckpt is not None:
        loaded = load_checkpoint(ckpt)
        if growth is not None and loaded["state"].get("growth"):
            model = growth.replay(model, int(loaded["state"]["growth"])).to(device)
            optimizer = make_opt(opt_params(model))
        check_state_fits(model.state_dict(), loaded["model"], ckpt)
        model.load_state_dict(loaded["model"])
        try:
            optimizer.load_state_dict(loaded["optim"])
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"checkpoint {ckpt}: its optimizer state does not fit {opt_name} ({e})") from None
        _set_rng_state(loaded["rng"], device)
        state.update(loaded["state"])

    n_params = sum(p.numel() for p in model.parameters())
    full_config = {
        "name": run_dir.name, "experiment": exp.name, "status": "running",
        "train": _json_safe({**asdict(cfg), "lr": lr, "optimizer": opt_name, "amp": amp,
                             "run_dir": str(run_dir), "resume": False}),
        "plan": plan.to_dict(), "tokenizer": {"name": tokenizer.name, "vocab_size": tokenizer.vocab_size},
        "world_size": world, "device": device, "n_params": n_params,
        "model_config": _json_safe(export_config(exp, model)),
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
    }

    def write_config(status: str) -> None:
        if is_main:
            full_config["status"] = status
            atomic_write_text(run_dir / "config.json", json.dumps(full_config, indent=2) + "\n")

    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config("running")
        writer = StatsWriter(run_dir / "stats.jsonl", truncate_after_step=state["step"])

    train_model = model
    if cfg.compile:
        train_model = torch.compile(train_model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_model = DDP(train_model, device_ids=[torch.device(device).index] if dev_type == "cuda" else None)
    scaler = torch.amp.GradScaler(dev_type) if amp == "fp16" else None
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    def autocast():
        return torch.autocast(dev_type, dtype=amp_dtype, enabled=amp_dtype is not None)

    def open_stream(i: int, st: dict[str, Any] | None, part: str = "train") -> PackedStream:
        s = plan.steps[i]
        if part == "train" and (cfg.order_by or cfg.order):
            from lminspect.train.ordered import OrderedStream

            return OrderedStream(s.data, tokenizer, s.seq_len or cfg.seq_len, split=s.split,
                                 text_field=s.text_field, order_by=cfg.order_by,
                                 order=cfg.order or "asc", metadata=cfg.metadata, seed=cfg.seed, state=st)
        return PackedStream(s.data, tokenizer, s.seq_len or cfg.seq_len, split=s.split,
                            text_field=s.text_field, part=part, state=st)

    def done() -> bool:
        if cfg.max_steps is not None and state["step"] >= cfg.max_steps:
            return True
        if cfg.max_tokens is not None and state["tokens"] >= cfg.max_tokens:
            return True
        return state["plan_step"] >= len(plan.steps)

    def save() -> Path | None:
        if not is_main:
            return None
        return save_checkpoint(
            run_dir, step=state["step"], exported=export_state_dict(exp, model),
            config=export_config(exp, model), tokenizer_json=tokenizer.to_json(),
            model_state=model.state_dict(), optim_state=optimizer.state_dict(),
            rng=_rng_state(device), train_state=state, keep=cfg.keep_checkpoints,
            extra_files=({"seen_ids.json": json.dumps(stream.seen_ids())}
                         if stream is not None and hasattr(stream, "seen_ids") else None))

    def loss_and_acc(x, y):
        with autocast():
            logits = train_model(x)
        logits = logits.float()
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        correct = (logits.argmax(-1) == y).sum()
        return loss, correct

    @torch.no_grad()
    def evaluate() -> tuple[float, float]:
        model.eval()
        stream = open_stream(min(state["plan_step"], len(plan.steps) - 1), None, part="val")
        tot_loss, tot_correct, tot_n = 0.0, 0, 0
        for _ in range(cfg.eval_batches):
            b = stream.next_batch(mini).to(device)
            x, y = b[:, :-1], b[:, 1:]
            with autocast():
                logits = model(x)
            logits = logits.float()
            tot_loss += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                                        reduction="sum").item()
            tot_correct += int((logits.argmax(-1) == y).sum())
            tot_n += y.numel()
        model.train()
        return tot_loss / tot_n, tot_correct / tot_n

    def all_mean(values: list[float]) -> list[float]:
        if world == 1:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return (t / world).tolist()

    progress = None
    show = cfg.progress if cfg.progress is not None else sys.stdout.isatty()
    if is_main and show:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        total = cfg.max_steps
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                            TextColumn("step {task.completed}/{task.total}"),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn())
        progress.start()
        task = progress.add_task(exp.name, total=total, completed=state["step"], info="")

    losses: list[float] = []
    status = "done"
    last_saved = state["step"] if ckpt is not None else -1
    stream = None if done() else open_stream(state["plan_step"], state["data"])
    model.train()
    t_start = time.perf_counter() - state["elapsed"]
    try:
        while not done():
            pstep = plan.steps[state["plan_step"]]
            seq = pstep.seq_len or cfg.seq_len
            if pstep.max_tokens is not None and state["step_tokens"] >= pstep.max_tokens:
                state.update(plan_step=state["plan_step"] + 1, step_tokens=0, data=None)
                stream = None if done() else open_stream(state["plan_step"], None)
                continue
            t0 = time.perf_counter()
            batch = stream.next_batch(cfg.batch_size)
            local = batch[rank * local_bs:(rank + 1) * local_bs].to(device)
            loss_sum, correct = 0.0, 0
            chunks = list(torch.split(local, mini))
            for ci, chunk in enumerate(chunks):
                x, y = chunk[:, :-1], chunk[:, 1:]
                sync_ctx = (train_model.no_sync() if world > 1 and ci < len(chunks) - 1
                            else _nullcontext())
                with sync_ctx:
                    loss, corr = loss_and_acc(x, y)
                    weight = chunk.size(0) / local.size(0)
                    scaled = loss * weight
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                loss_sum += loss.item() * weight
                correct += int(corr)
            mean_loss, acc = all_mean([loss_sum, correct / (local.size(0) * seq)])
            if not math.isfinite(mean_loss):
                optimizer.zero_grad(set_to_none=True)
                where = latest_checkpoint(run_dir)
                status = "failed"
                raise UserError(f"loss is {mean_loss} at step {state['step'] + 1}; training stopped. "
                                f"Last good checkpoint: {where or 'none'}")
            if scaler is not None:
                scaler.unscale_(optimizer)
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                   cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if exp.on_step is not None:
                exp.on_step(model, state["step"] + 1)
            ntok = cfg.batch_size * seq
            from lminspect.train.flops import flops_per_token

            state["flops"] = state.get("flops", 0.0) + flops_per_token(model, seq) * ntok
            state["step"] += 1
            state["tokens"] += ntok
            state["step_tokens"] += ntok
            state["data"] = stream.state()
            dt = time.perf_counter() - t0
            state["elapsed"] = time.perf_counter() - t_start
            losses.append(mean_loss)
            row = {"step": state["step"], "tokens": state["tokens"], "loss": mean_loss, "acc": acc,
                   "lr": optimizer.param_groups[0]["lr"], "grad_norm": float(gnorm),
                   "tok_s": ntok / dt if dt > 0 else 0.0, "time": round(state["elapsed"], 3),
                   "plan_step": state["plan_step"], "flops": state["flops"]}
            if hasattr(stream, "stats"):  # ordered stream: documents seen, running metadata means
                row.update(stream.stats())
            if growth is not None and growth.due(state["tokens"]):
                model, optimizer, grow_row = growth.grow(model, optimizer, make_opt, lr, probe=(x, y))
                model.to(device)
                train_model = model
                state["growth"] = growth.applied
                row.update(grow_row)
            if cfg.eval_every and state["step"] % cfg.eval_every == 0:
                vl, va = all_mean(list(evaluate()))
                row.update(val_loss=vl, val_acc=va)
            if is_main:
                writer.write(row)
                if progress is not None:
                    progress.update(task, completed=state["step"],
                                    info=f"loss {mean_loss:.3f}  {row['tok_s']:.0f} tok/s")
                if on_step is not None:
                    on_step(row)
            if cfg.save_every and state["step"] % cfg.save_every == 0:
                save()
                last_saved = state["step"]
    except KeyboardInterrupt:
        status = "interrupted"
        optimizer.zero_grad(set_to_none=True)
    except BaseException:
        if progress is not None:
            progress.stop()
        if is_main:
            writer.close()
            write_config("failed" if status == "failed" else "stopped")
        _dist_teardown(own_group)
        raise
    if progress is not None:
        progress.stop()
    path = None
    if state["step"] != last_saved and state["step"] > 0:
        path = save()
    elif is_main:
        path = latest_checkpoint(run_dir)
    if is_main:
        writer.close()
        write_config(status)
    _dist_teardown(own_group)
    return TrainResult(run_dir, state["step"], state["tokens"], losses, status, path)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


def _dist_teardown(own_group: bool) -> None:
    if own_group:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
