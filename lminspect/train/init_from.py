"""``train --init-from DIR``: start training from existing weights instead of a fresh init.

DIR is a model directory (e.g. what ``lminspect grow`` wrote), a checkpoint directory, or a run
directory (its latest checkpoint). The model's shape comes from DIR, not from the experiment's
defaults, so a grown model keeps its new depth and width; the experiment still supplies the
tokenizer, the training defaults and the name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lminspect.errors import UserError


def check_init_from(ref: str) -> None:
    """Fail early (one line) when DIR does not exist."""
    if not Path(ref).exists():
        raise UserError(f"--init-from {ref}: no such model, checkpoint or run directory")


def model_from(ref: str, vocab_size: int, seq_len: int, arch: str | None = None) -> Any:
    """A trainable float32 copy of the model at ``ref`` (weights owned, gradients on); refused when
    it is of another family than the experiment's ``arch`` (a GPT-2 trained under a llama name)."""
    import torch

    from lminspect.grow.io import resolve_model_dir
    from lminspect.models.open import open_model

    check_init_from(ref)
    model = open_model(resolve_model_dir(ref), tokenizer=False).model
    got = str(getattr(model, "arch", "") or "")
    if arch and got and got != arch:
        raise UserError(f"--init-from {ref}: a {got} model, but the experiment trains a {arch} model; pick an "
                        f"experiment of the {got} family (lminspect train --exp list)")
    n_vocab = int(model.config.vocab_size)
    if n_vocab < vocab_size:
        raise UserError(f"--init-from {ref}: its vocabulary ({n_vocab}) is smaller than the experiment's "
                        f"tokenizer ({vocab_size})")
    ctx = int(getattr(model, "context_length", seq_len) or seq_len)
    if ctx < seq_len:
        raise UserError(f"--init-from {ref}: its context ({ctx} tokens) is shorter than --seq-len {seq_len}")
    with torch.no_grad():  # memory-mapped, read-only weights -> owned tensors the optimizer can update
        for p in model.parameters():
            p.data = p.data.clone()
    model.requires_grad_(True)
    return model.train()
