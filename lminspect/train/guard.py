"""What ``train`` checks before it touches a run: option values, the saved run it resumes, and
whether a checkpoint fits the model it is loaded into. Each problem is one ``UserError`` line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lminspect.errors import UserError

# flags that may differ on --resume (the saved run defines everything else)
RESUME_CHANGEABLE = ("max_steps", "max_tokens", "device", "progress", "load_plugins")


def validate_train_config(cfg: Any) -> None:
    """NaN/inf/negative values, device names and absurd shapes refused before anything is built."""
    from lminspect import limits, validate

    validate.count("--batch-size", cfg.batch_size)
    validate.count("--seq-len", cfg.seq_len)
    validate.count("--mini-batch-size", cfg.mini_batch_size)
    validate.finite("--lr", cfg.lr, positive=True)
    validate.finite("--weight-decay", cfg.weight_decay, minimum=0.0)
    validate.finite("--grad-clip", cfg.grad_clip, minimum=0.0)
    validate.count("--max-steps", cfg.max_steps)
    validate.count("--max-tokens", cfg.max_tokens)
    validate.count("--eval-every", cfg.eval_every, minimum=0)
    validate.count("--save-every", cfg.save_every, minimum=0)
    validate.count("--warmup-steps", cfg.warmup_steps, minimum=0)
    if cfg.max_steps and cfg.warmup_steps and cfg.warmup_steps > cfg.max_steps:
        raise UserError(f"--warmup-steps {cfg.warmup_steps} is longer than --max-steps {cfg.max_steps}: the run "
                        "would end before its learning rate is reached")
    if cfg.mini_batch_size and cfg.mini_batch_size > cfg.batch_size:
        raise UserError(f"--mini-batch-size {cfg.mini_batch_size} is larger than --batch-size {cfg.batch_size} "
                        "(the sequences per step it splits into forward passes)")
    validate.count("--seed", cfg.seed, minimum=0)
    if cfg.device != "auto":
        validate.device(cfg.device)
    if not isinstance(cfg.model_args, dict):
        raise UserError("--set: expected KEY=VALUE pairs")
    limits.check_count("--seq-len", cfg.seq_len, 1 << 20)
    limits.check_count("--batch-size", cfg.batch_size, 1 << 20)
    # the largest activation of a step: logits [mini, seq, vocab] in fp32, with their gradient
    mini = min(cfg.mini_batch_size or cfg.batch_size, cfg.batch_size)
    vocab = int(cfg.model_args.get("vocab_size", 4096)) if isinstance(
        cfg.model_args.get("vocab_size", 4096), int) else 4096
    limits.check_memory(f"a training step of {mini} x {cfg.seq_len} tokens", 3 * 4 * mini * cfg.seq_len * vocab)


def read_saved_config(run_dir: Path) -> dict[str, Any]:
    """The ``train`` section of a run's ``config.json``, or one line saying what is wrong with it."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"--resume: {run_dir} has no config.json (not a run directory)")
    try:
        saved = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"{path}: not valid JSON ({e}); the run cannot be resumed") from None
    train = saved.get("train") if isinstance(saved, dict) else None
    if not isinstance(train, dict):
        raise UserError(f"{path}: has no 'train' section; the run cannot be resumed")
    return train


def resume_conflicts(given: dict[str, Any], saved: dict[str, Any]) -> list[str]:
    """Flags given on the command line that contradict the saved run (``--lr 0.1`` on a run
    trained at 6e-4), as ``--flag VALUE (run has VALUE)`` strings."""
    out = []
    for key, value in given.items():
        if key in RESUME_CHANGEABLE or key in ("resume", "run_dir") or key not in saved:
            continue
        if value != saved[key]:
            out.append(f"--{key.replace('_', '-')} {value!r} (the run has {saved[key]!r})")
    return out


def check_state_fits(model_state: dict[str, Any], ckpt_state: dict[str, Any], ckpt: Path) -> None:
    """A checkpoint of another experiment or shape: say which tensors differ and how."""
    missing = sorted(set(model_state) - set(ckpt_state))
    extra = sorted(set(ckpt_state) - set(model_state))
    shapes = [(k, tuple(model_state[k].shape), tuple(ckpt_state[k].shape)) for k in model_state
              if k in ckpt_state and tuple(model_state[k].shape) != tuple(ckpt_state[k].shape)]
    cfg = Path(ckpt) / "config.json"
    origin = ""
    try:
        exp = json.loads(cfg.read_text(encoding="utf-8")).get("lminspect_experiment")
        origin = f" (saved by experiment {exp!r})" if exp else ""
    except (OSError, ValueError, AttributeError):
        pass
    if shapes:
        k, here, there = shapes[0]
        raise UserError(f"checkpoint {ckpt}{origin} does not fit this model: {k} is {there} in the "
                        f"checkpoint but {here} here ({len(shapes)} tensor(s) differ in shape)")
    if missing or extra:
        what = f"lacks {missing[0]}" if missing else f"has {extra[0]} that this model does not"
        raise UserError(f"checkpoint {ckpt}{origin} does not fit this model: it {what} "
                        f"({len(missing)} missing, {len(extra)} unexpected tensors)")


def remove_leftovers(run_dir: Path) -> None:
    """Temporaries of a run that died mid-write (``checkpoints/.step_*``, ``.config.json.*``,
    ``.stats.jsonl.*``); call only while holding the run dir's lock."""
    import shutil

    run_dir = Path(run_dir)
    for where in (run_dir, run_dir / "checkpoints"):
        if not where.is_dir():
            continue
        for p in where.iterdir():
            if not p.name.startswith((".step_", ".config.json.", ".stats.jsonl.", ".latest.")):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); elsewhere torch emulates it."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set(text.split("flags", 1)[1].split("\n", 1)[0].split()) if "flags" in text else set()
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def warn_cpu_amp(amp: str, dev_type: str) -> None:
    """``--amp bf16`` on a CPU without native bf16 runs, but slower than float32: say so once."""
    if amp == "bf16" and dev_type == "cpu" and not cpu_has_bf16():
        import sys

        print("lminspect: warning: --amp bf16 on a CPU without AVX512-BF16/AMX is emulated and slower than "
              "float32 (--amp none)", file=sys.stderr)
