"""What a training run is given (:class:`TrainConfig`, the options of ``lminspect train``) and what it
returns (:class:`TrainResult`). The loop itself is :mod:`lminspect.train.loop`."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
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
    lr_schedule: str = "constant"  # constant | cosine | linear (lminspect.train.schedule)
    warmup_steps: int = 0  # linear warmup from lr/warmup to lr
    min_lr_ratio: float = 0.1  # cosine/linear decay ends at lr * this at the last step
    init_from: str | None = None  # model dir, checkpoint or run dir to start from (train.init_from)
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


def check_config(cfg: TrainConfig) -> None:
    """Refuse bad option values (one UserError line) before anything is built."""
    from lminspect.train.guard import validate_train_config

    validate_train_config(cfg)
    for name in ("batch_size", "seq_len"):
        if getattr(cfg, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive")
    if cfg.mini_batch_size is not None and cfg.mini_batch_size <= 0:
        raise UserError("--mini-batch-size must be positive")
    if cfg.lr is not None and not cfg.lr > 0:
        raise UserError(f"--lr must be positive, got {cfg.lr}")
    from lminspect.train.schedule import check_schedule

    check_schedule(cfg)
    if cfg.init_from is not None:
        from lminspect.train.init_from import check_init_from

        check_init_from(cfg.init_from)
    if cfg.amp not in ("auto", "none", "bf16", "fp16"):
        raise UserError(f"--amp {cfg.amp!r}: choose none, bf16 or fp16")
