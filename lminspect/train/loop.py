"""The training loop behind ``lminspect train``.

:func:`train` reads top to bottom like nanoGPT's ``train.py``: set up (:func:`_setup`,
:func:`_build_model`, :func:`_start`), loop (:func:`_loop`: :func:`_train_step`, growth,
:func:`_evaluate`, :func:`_log`, :func:`_save`), finish. The run's state is one
:class:`RunState` that these functions take and update. Design choices:

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

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lminspect.distributed import join, leave, local_device
from lminspect.errors import UserError
from lminspect.train.config import DEFAULT_LR, TrainConfig, TrainResult, check_config
from lminspect.train.schedule import apply_schedule

__all__ = ["RunState", "TrainConfig", "TrainResult", "train"]


# ---------------------------------------------------------------- distributed


def _resolve_device(device: str, rank: int, world: int) -> str:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = local_device(device, rank, world)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine")
    return device


# ---------------------------------------------------------------- helpers


def _fused_ok(params: list, kinds: tuple[str, ...]) -> bool:
    """Whether every parameter is a float tensor on a device of ``kinds`` (where torch's fused step runs)."""
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    return bool(tensors) and all(t.device.type in kinds and t.is_floating_point() for t in tensors)


def _make_optimizer(name: str, params, lr: float, weight_decay: float):
    """torch's fused implementations where they run (AdamW: CPU and CUDA, Adagrad: CPU): one pass over
    each parameter instead of one per elementwise op; results match the plain loop to float rounding."""
    import torch

    params = list(params)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay,
                                   fused=_fused_ok(params, ("cpu",)) or None)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay,
                                 fused=_fused_ok(params, ("cpu", "cuda")) or None)
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


# ---------------------------------------------------------------- the run's state


@dataclass
class RunState:
    """Everything one training run holds while it runs; the functions below take it and update it.

    ``model`` is the module whose weights are saved; ``train_model`` is what the step calls (the same
    module, or it wrapped by ``torch.compile`` / DDP). The growing experiment replaces both, and the
    optimizer, mid-run. ``state`` is what a checkpoint stores to resume exactly.
    """

    cfg: TrainConfig
    run_dir: Path
    ckpt: Path | None  # the checkpoint resumed from, if any
    exp: Any  # lminspect.experiments.Experiment
    tokenizer: Any
    plan: Any  # lminspect.train.plans.TrainPlan
    rank: int
    world: int
    own_group: bool  # this process started the process group (and must end it)
    device: str
    dev_type: str  # "cuda" | "cpu" (autocast / GradScaler device type)
    local_bs: int  # sequences per step on this rank
    mini: int  # sequences per forward/backward
    amp: str  # none | bf16 | fp16
    lr: float
    opt_name: str
    model: Any = None
    train_model: Any = None
    optimizer: Any = None
    growth: Any = None  # the growing experiment's GrowthController, else None
    scaler: Any = None  # GradScaler for fp16
    amp_dtype: Any = None
    state: dict[str, Any] = field(default_factory=lambda: {
        "step": 0, "tokens": 0, "plan_step": 0, "step_tokens": 0, "data": None, "elapsed": 0.0})
    full_config: dict[str, Any] = field(default_factory=dict)  # config.json
    stream: Any = None  # the current plan step's training stream
    writer: Any = None  # StatsWriter (rank 0)
    progress: Any = None  # runtime.Progress (rank 0): a bar on a terminal, plain lines in a log
    progress_key: str = "step"  # what it counts: "step", or "tokens" for a --max-tokens budget
    losses: list[float] = field(default_factory=list)
    status: str = "done"
    last_saved: int = -1
    t_start: float = 0.0  # perf_counter at step 0 (elapsed time survives a resume)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


# ---------------------------------------------------------------- set-up


def _resolve_run(cfg: TrainConfig) -> tuple[TrainConfig, Path, Path | None]:
    """(config, run dir, checkpoint): on ``--resume`` the saved run's config, else ``cfg`` for a fresh run."""
    from lminspect.distributed import is_main
    from lminspect.rundir import has_started, latest_checkpoint
    from lminspect.train.guard import read_saved_config

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
        if ckpt is None and any((run_dir / "checkpoints").glob("step_*")):  # all damaged: never restart silently
            raise UserError(f"--resume: no complete checkpoint in {run_dir / 'checkpoints'}; nothing to resume "
                            "from (start a new --run-dir)")
    elif has_started(run_dir):
        raise UserError(f"run directory {run_dir} already holds a run; use --resume or another --run-dir")
    check_config(cfg)  # a refused setting is the one line: no warning before it
    if cfg.resume and ckpt is None and is_main():  # stopped before its first checkpoint
        print(f"lminspect: warning: --resume: {run_dir} has no checkpoint yet; training starts again from "
              "step 0 with its saved settings", file=sys.stderr)
    return cfg, run_dir, ckpt


def _setup(cfg: TrainConfig) -> RunState:
    """Processes, device, experiment, tokenizer and plan; the model and optimizer come next."""
    import torch

    from lminspect.experiments import get_experiment
    from lminspect.train.data import load_train_tokenizer
    from lminspect.train.plans import load_plan

    cfg, run_dir, ckpt = _resolve_run(cfg)
    rank, world, own_group = join(cfg.device if cfg.device != "auto" else
                                  ("cuda" if torch.cuda.is_available() else "cpu"))
    device = _resolve_device(cfg.device, rank, world)
    if cfg.batch_size % world:
        raise UserError(f"--batch-size {cfg.batch_size} is not divisible by the {world} processes")
    local_bs = cfg.batch_size // world
    exp = get_experiment(cfg.exp, cfg.load_plugins)
    return RunState(
        cfg=cfg, run_dir=run_dir, ckpt=ckpt, exp=exp, tokenizer=load_train_tokenizer(exp.tokenizer),
        plan=load_plan(cfg.plan, cfg.data), rank=rank, world=world, own_group=own_group, device=device,
        dev_type="cuda" if device.startswith("cuda") else "cpu", local_bs=local_bs,
        mini=min(cfg.mini_batch_size or local_bs, local_bs),
        amp=cfg.amp if cfg.amp != "auto" else ("bf16" if device.startswith("cuda") else "none"),
        lr=cfg.lr if cfg.lr is not None else exp.defaults.get("lr", DEFAULT_LR),
        opt_name=cfg.optimizer or exp.defaults.get("optimizer", "adagrad"),
    )


def _new_optimizer(run: RunState, model: Any) -> Any:
    """The run's optimizer over ``model`` (one param group per generation for the growing experiment)."""
    if run.growth is not None:
        params = run.growth.param_groups(model, run.lr)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    return _make_optimizer(run.opt_name, params, run.lr, run.cfg.weight_decay)


def _build_model(run: RunState) -> None:
    """Model and optimizer, restored from the checkpoint when resuming."""
    import torch

    from lminspect.train.checkpoint import load_checkpoint
    from lminspect.train.guard import check_state_fits

    cfg, tokenizer = run.cfg, run.tokenizer
    torch.manual_seed(cfg.seed)
    model_args = dict(cfg.model_args)
    vocab = int(model_args.pop("vocab_size", tokenizer.vocab_size))  # may pad the vocab (e.g. 50304)
    if vocab < tokenizer.vocab_size:
        raise UserError(f"--set vocab_size={vocab} is smaller than the tokenizer's {tokenizer.vocab_size}")
    max_seq = max([s.seq_len or cfg.seq_len for s in run.plan.steps])
    if cfg.init_from:  # the shape (and, on a fresh run, the weights) come from that model
        from lminspect.train.init_from import model_from

        run.model = model_from(cfg.init_from, tokenizer.vocab_size, max_seq, arch=run.exp.arch).to(run.device)
    else:
        run.model = run.exp.build(vocab, max_seq, **model_args).to(run.device)
    # growing experiment (lminspect.grow.schedule): growth events, one param group per generation
    run.growth = getattr(run.model, "lminspect_growth", None)
    if run.growth is not None and (run.world > 1 or cfg.compile):
        raise UserError("the growing experiment replaces the model mid-run: not supported with "
                        "--compile or several processes")
    run.optimizer = _new_optimizer(run, run.model)
    if run.ckpt is None:
        return
    loaded = load_checkpoint(run.ckpt)
    if run.growth is not None and loaded["state"].get("growth"):
        run.model = run.growth.replay(run.model, int(loaded["state"]["growth"])).to(run.device)
        run.optimizer = _new_optimizer(run, run.model)
    check_state_fits(run.model.state_dict(), loaded["model"], run.ckpt)
    run.model.load_state_dict(loaded["model"])
    try:
        fused = [g.get("fused") for g in run.optimizer.param_groups]
        run.optimizer.load_state_dict(loaded["optim"])
        # fused or not is this device's choice, not the checkpoint's (the results agree either way)
        for g, f in zip(run.optimizer.param_groups, fused, strict=True):
            g["fused"] = f
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"checkpoint {run.ckpt}: its optimizer state does not fit {run.opt_name} ({e})") from None
    _set_rng_state(loaded["rng"], run.device)
    run.state.update(loaded["state"])
    run.last_saved = run.state["step"]


def _start(run: RunState) -> None:
    """config.json, the stats log, the wrapped training module, mixed precision and the progress bar."""
    import torch

    from lminspect.experiments.base import export_config
    from lminspect.train.runlog import StatsWriter

    cfg = run.cfg
    run.full_config = {
        "name": run.run_dir.name, "experiment": run.exp.name, "status": "running",
        "train": _json_safe({**asdict(cfg), "lr": run.lr, "optimizer": run.opt_name, "amp": run.amp,
                             "run_dir": str(run.run_dir), "resume": False}),
        "plan": run.plan.to_dict(),
        "tokenizer": {"name": run.tokenizer.name, "vocab_size": run.tokenizer.vocab_size},
        "world_size": run.world, "device": run.device, "n_params": sum(p.numel() for p in run.model.parameters()),
        "model_config": _json_safe(export_config(run.exp, run.model)),
        "versions": {"torch": torch.__version__, "python": sys.version.split()[0]},
    }
    if run.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        _write_config(run, "running")
        run.writer = StatsWriter(run.run_dir / "stats.jsonl", truncate_after_step=run.state["step"])
    run.train_model = run.model
    if cfg.compile:
        run.train_model = torch.compile(run.train_model)
    if run.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        run.train_model = DDP(run.train_model,
                              device_ids=[torch.device(run.device).index] if run.dev_type == "cuda" else None)
    if run.is_main:
        from lminspect.train.guard import warn_cpu_amp

        warn_cpu_amp(run.amp, run.dev_type)
    run.scaler = torch.amp.GradScaler(run.dev_type) if run.amp == "fp16" else None
    run.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(run.amp)
    _start_progress(run)


def _start_progress(run: RunState) -> None:
    """Rank 0's progress (``runtime.Progress``): a bar on a terminal, else a plain line every
    LMINSPECT_PROGRESS_EVERY seconds, so a log is neither silent nor flooded; ``progress=True``
    forces the bar, ``False`` shows neither. It counts tokens when only --max-tokens bounds the run."""
    cfg = run.cfg
    if not run.is_main or cfg.progress is False:
        return
    from lminspect.runtime import Progress

    by_tokens = cfg.max_steps is None and cfg.max_tokens is not None
    run.progress_key = "tokens" if by_tokens else "step"
    total = cfg.max_tokens if by_tokens else cfg.max_steps
    flag = "--max-tokens" if by_tokens else "--max-steps"

    def quick(seconds: float) -> str:  # the up-front estimate of a long run (runtime.Estimate)
        from lminspect.runtime import nice_count

        return f"{flag} {nice_count(total * 60 / seconds)} for a quick look"

    run.progress = Progress(f"train {run.exp.name}", total, "tokens" if by_tokens else "steps",
                            bar=True if cfg.progress else None, start=run.state[run.progress_key],
                            quick=quick if total else None)


def _open_stream(run: RunState, i: int, st: dict[str, Any] | None, part: str = "train") -> Any:
    """The packed token stream of plan step ``i`` (the ordered stream when training with --order)."""
    from lminspect.train.data import PackedStream

    cfg, s = run.cfg, run.plan.steps[i]
    if part == "train" and (cfg.order_by or cfg.order):
        from lminspect.train.ordered import OrderedStream

        return OrderedStream(s.data, run.tokenizer, s.seq_len or cfg.seq_len, split=s.split,
                             text_field=s.text_field, order_by=cfg.order_by,
                             order=cfg.order or "asc", metadata=cfg.metadata, seed=cfg.seed, state=st)
    return PackedStream(s.data, run.tokenizer, s.seq_len or cfg.seq_len, split=s.split,
                        text_field=s.text_field, part=part, state=st)


# ---------------------------------------------------------------- one step


def _done(run: RunState) -> bool:
    cfg, state = run.cfg, run.state
    if cfg.max_steps is not None and state["step"] >= cfg.max_steps:
        return True
    if cfg.max_tokens is not None and state["tokens"] >= cfg.max_tokens:
        return True
    return state["plan_step"] >= len(run.plan.steps)


def _autocast(run: RunState) -> Any:
    import torch

    return torch.autocast(run.dev_type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None)


def _all_mean(run: RunState, values: list[float]) -> list[float]:
    """The mean over ranks of each value (the values themselves on one process)."""
    if run.world == 1:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=run.device)
    dist.all_reduce(t)
    return (t / run.world).tolist()


def _fused_head(run: RunState) -> Any:
    """The head weight when the step may use the one-pass head loss (:mod:`lminspect.train.head_loss`):
    one process, no ``torch.compile`` wrapper, full precision and a plain lminspect model; else None."""
    if run.world > 1 or run.train_model is not run.model or run.amp_dtype is not None:
        return None
    from lminspect.train.head_loss import plain_head

    return plain_head(run.model)


def _forward_backward(run: RunState, local: Any) -> tuple[Any, Any, Any, Any]:
    """Gradients of this rank's batch, ``mini`` sequences at a time: (mean loss, correct, last x, last y),
    the first two as 0-dim tensors (read once per step, not once per chunk).

    Each chunk's mean loss is weighted by its share of the batch, so the summed gradient is the
    full batch's mean-loss gradient; DDP syncs gradients on the last chunk only.
    """
    import torch
    import torch.nn.functional as F

    from lminspect.train.head_loss import head_loss, hidden_states

    head = _fused_head(run)
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    correct = torch.zeros((), dtype=torch.long, device=run.device)
    chunks = list(torch.split(local, run.mini))
    for ci, chunk in enumerate(chunks):
        x, y = chunk[:, :-1], chunk[:, 1:]
        last = ci == len(chunks) - 1
        with run.train_model.no_sync() if run.world > 1 and not last else contextlib.nullcontext():
            if head is not None:
                loss, corr = head_loss(hidden_states(run.model, x), head, y)
            else:
                with _autocast(run):
                    logits = run.train_model(x)
                logits = logits.float()
                loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
                corr = (logits.argmax(-1) == y).sum()
                del logits  # not kept alive through backward
            weight = chunk.size(0) / local.size(0)
            scaled = loss * weight
            (run.scaler.scale(scaled) if run.scaler is not None else scaled).backward()
        loss_sum += loss.detach() * weight
        correct += corr
    return loss_sum, correct, x, y


def _grad_norm(run: RunState) -> Any:
    """The gradients' total 2-norm (a 0-dim tensor), clipped to ``grad_clip`` when that is set; without
    clipping the norm alone (clip_grad_norm_ would also multiply every gradient by 1)."""
    import torch

    params = [p for p in run.model.parameters() if p.grad is not None]
    if run.cfg.grad_clip > 0:
        return torch.nn.utils.clip_grad_norm_(params, run.cfg.grad_clip)
    return torch.nn.utils.get_total_norm([p.grad for p in params])


def _optimizer_step(run: RunState) -> None:
    """Step (after unscaling fp16 gradients and clipping) and zero the gradients."""
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)


def _train_step(run: RunState) -> tuple[dict[str, Any], Any, Any]:
    """One optimizer step on the next batch: (stats row, last x, last y). A NaN/inf loss stops before the step."""
    import torch

    from lminspect.rundir import latest_checkpoint
    from lminspect.train.flops import flops_per_token

    cfg, state = run.cfg, run.state
    seq = run.plan.steps[state["plan_step"]].seq_len or cfg.seq_len
    t0 = time.perf_counter()
    batch = run.stream.next_batch(cfg.batch_size)
    local = batch[run.rank * run.local_bs:(run.rank + 1) * run.local_bs].to(run.device)
    loss_sum, correct, x, y = _forward_backward(run, local)
    apply_schedule(run.optimizer, cfg, state["step"] + 1)
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    gnorm_t = _grad_norm(run)
    # the step's one host sync: loss, accuracy and norm together
    loss_sum, correct, gnorm = torch.stack([loss_sum, correct.double(), gnorm_t.double()]).tolist()
    mean_loss, acc = _all_mean(run, [loss_sum, correct / (local.size(0) * seq)])
    if not math.isfinite(mean_loss):
        run.optimizer.zero_grad(set_to_none=True)
        run.status = "failed"
        raise UserError(f"loss is {mean_loss} at step {state['step'] + 1}; training stopped. "
                        f"Last good checkpoint: {latest_checkpoint(run.run_dir) or 'none'}")
    _optimizer_step(run)
    if run.exp.on_step is not None:
        run.exp.on_step(run.model, state["step"] + 1)
    ntok = cfg.batch_size * seq
    state["flops"] = state.get("flops", 0.0) + flops_per_token(run.model, seq) * ntok
    state["step"] += 1
    state["tokens"] += ntok
    state["step_tokens"] += ntok
    state["data"] = run.stream.state()
    dt = time.perf_counter() - t0
    state["elapsed"] = time.perf_counter() - run.t_start
    run.losses.append(mean_loss)
    row = {"step": state["step"], "tokens": state["tokens"], "loss": mean_loss, "acc": acc,
           "lr": run.optimizer.param_groups[0]["lr"], "grad_norm": gnorm,
           "tok_s": ntok / dt if dt > 0 else 0.0, "time": round(state["elapsed"], 3),
           "plan_step": state["plan_step"], "flops": state["flops"]}
    if hasattr(run.stream, "stats"):  # ordered stream: documents seen, running metadata means
        row.update(run.stream.stats())
    return row, x, y


def _grow(run: RunState, row: dict[str, Any], x: Any, y: Any) -> None:
    """Apply a growth event that is due (growing experiment): new model, optimizer and train module."""
    if run.growth is None or not run.growth.due(run.state["tokens"]):
        return
    run.model, run.optimizer, grow_row = run.growth.grow(
        run.model, run.optimizer, lambda params: _make_optimizer(run.opt_name, params, run.lr, run.cfg.weight_decay),
        run.lr, probe=(x, y))
    run.model.to(run.device)
    run.train_model = run.model
    run.state["growth"] = run.growth.applied
    row.update(grow_row)


def _evaluate(run: RunState) -> tuple[float, float]:
    """Mean loss and accuracy over ``eval_batches`` held-out mini-batches of the current plan step."""
    import torch
    import torch.nn.functional as F

    model = run.model
    model.eval()
    stream = _open_stream(run, min(run.state["plan_step"], len(run.plan.steps) - 1), None, part="val")
    tot_loss, tot_correct, tot_n = 0.0, 0, 0
    with torch.no_grad():
        for _ in range(run.cfg.eval_batches):
            b = stream.next_batch(run.mini).to(run.device)
            x, y = b[:, :-1], b[:, 1:]
            with _autocast(run):
                logits = model(x)
            logits = logits.float()
            tot_loss += F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                                        reduction="sum").item()
            tot_correct += int((logits.argmax(-1) == y).sum())
            tot_n += y.numel()
    model.train()
    return tot_loss / tot_n, tot_correct / tot_n


def _log(run: RunState, row: dict[str, Any], on_step: Callable[[dict[str, Any]], None] | None) -> None:
    """The step's row to stats.jsonl, the progress bar and ``on_step`` (rank 0)."""
    if not run.is_main:
        return
    run.writer.write(row)
    if run.progress is not None:
        run.progress.update(run.state[run.progress_key], info=f"loss {row['loss']:.3f}, {row['tok_s']:.0f} tok/s")
    if on_step is not None:
        on_step(row)


# ---------------------------------------------------------------- checkpoints and the end


def _write_config(run: RunState, status: str) -> None:
    from lminspect.fsutil import atomic_write_text

    if run.is_main:
        run.full_config["status"] = status
        atomic_write_text(run.run_dir / "config.json", json.dumps(run.full_config, indent=2) + "\n")


def _save(run: RunState) -> Path | None:
    """A checkpoint of the last completed step (rank 0), pruned to ``keep_checkpoints``."""
    from lminspect.experiments.base import export_config, export_state_dict
    from lminspect.train.checkpoint import save_checkpoint

    if not run.is_main:
        return None
    stream = run.stream
    return save_checkpoint(
        run.run_dir, step=run.state["step"], exported=export_state_dict(run.exp, run.model),
        config=export_config(run.exp, run.model), tokenizer_json=run.tokenizer.to_json(),
        model_state=run.model.state_dict(), optim_state=run.optimizer.state_dict(),
        rng=_rng_state(run.device), train_state=run.state, keep=run.cfg.keep_checkpoints,
        extra_files=({"seen_ids.json": json.dumps(stream.seen_ids())}
                     if stream is not None and hasattr(stream, "seen_ids") else None))


def _loop(run: RunState, on_step: Callable[[dict[str, Any]], None] | None) -> None:
    """Steps until the budget or the plan is spent, moving to the next plan step when one is used up."""
    cfg, state = run.cfg, run.state
    while not _done(run):
        pstep = run.plan.steps[state["plan_step"]]
        if pstep.max_tokens is not None and state["step_tokens"] >= pstep.max_tokens:
            state.update(plan_step=state["plan_step"] + 1, step_tokens=0, data=None)
            run.stream = None if _done(run) else _open_stream(run, state["plan_step"], None)
            continue
        row, x, y = _train_step(run)
        _grow(run, row, x, y)
        if cfg.eval_every and state["step"] % cfg.eval_every == 0:
            vl, va = _all_mean(run, list(_evaluate(run)))
            row.update(val_loss=vl, val_acc=va)
        _log(run, row, on_step)
        if cfg.save_every and state["step"] % cfg.save_every == 0:
            _save(run)
            run.last_saved = state["step"]


def _finish(run: RunState) -> Path | None:
    """The final checkpoint (unless the last step was just saved), config.json's status, the process group."""
    from lminspect.rundir import latest_checkpoint
    from lminspect.train.head_loss import release_buffers

    if run.progress is not None:
        run.progress.close()
    path = None
    if run.state["step"] != run.last_saved and run.state["step"] > 0:
        path = _save(run)
    elif run.is_main:
        path = latest_checkpoint(run.run_dir)
    if run.is_main:
        run.writer.close()
        _write_config(run, run.status)
    leave(run.own_group)
    release_buffers()
    return path


def _abort(run: RunState) -> None:
    """An error mid-run: close the log, mark the run failed (NaN loss) or stopped, leave the group."""
    from lminspect.train.head_loss import release_buffers

    release_buffers()
    if run.progress is not None:
        run.progress.close()
    if run.is_main:
        if run.writer is not None:
            run.writer.close()
        _write_config(run, "failed" if run.status == "failed" else "stopped")
    leave(run.own_group)


# ---------------------------------------------------------------- the loop


def train(cfg: TrainConfig, on_step: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train (or resume) a run; returns when the budget is spent or on Ctrl-C.

    ``on_step(row)`` is called on rank 0 after every step with its stats row; raising
    ``KeyboardInterrupt`` from it behaves exactly like Ctrl-C (tests use this).
    """
    run = _setup(cfg)
    _build_model(run)
    _start(run)
    state = run.state
    run.stream = None if _done(run) else _open_stream(run, state["plan_step"], state["data"])
    run.model.train()
    run.t_start = time.perf_counter() - state["elapsed"]
    try:
        _loop(run, on_step)
    except KeyboardInterrupt:
        run.status = "interrupted"
        run.optimizer.zero_grad(set_to_none=True)
    except BaseException:
        _abort(run)
        raise
    path = _finish(run)
    return TrainResult(run.run_dir, state["step"], state["tokens"], run.losses, run.status, path)
