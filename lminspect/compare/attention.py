"""Attention maps of one prompt across a run's checkpoints (seed 001's ``visualize_attn``).

Each checkpoint's model is built in turn (one at a time, dropped before the next) and runs
the same prompt; the result is ``probs[checkpoint, layer, head, query, key]``. The text view
is a small-multiples grid: one row of heads per checkpoint, each head a ``T x T`` block of
shade characters (darker = more attention), so a pattern forming over training is visible at
a glance; ``--out`` keeps the full array.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lminspect.compare.checkpoints import Checkpoint
from lminspect.errors import UserError
from lminspect.models.sites import site_name

SHADES = " .:-=+*#%@"  # 0 ... 1, ten levels


def attention_across(cks: Sequence[Checkpoint], prompt: str, *,
                     progress: Callable[[int, int, str], None] | None = None) -> tuple[np.ndarray, list[str]]:
    """``(probs [checkpoints, layers, heads, T, T], token labels)`` of ``prompt`` at every checkpoint,
    tokenized by the newest checkpoint's tokenizer."""
    import torch

    from lminspect.models.open import open_model

    tok = open_model(cks[-1].path, lazy=True).tokenizer
    ids = tok.encode(prompt)
    if not ids:
        raise UserError("--attention: the prompt has no tokens")
    labels = [tok.decode([i]).replace("\n", "\\n") for i in ids]
    maps = []
    for k, ck in enumerate(cks):
        if progress is not None:
            progress(k, len(cks), f"step {ck.step}")
        lm = open_model(ck.path, tokenizer=False).model
        if len(ids) > lm.context_length:
            raise UserError(f"--attention: {len(ids)} tokens exceed the model's context of {lm.context_length}")
        with torch.inference_mode():
            _, acts = lm.run_with_cache(torch.tensor([ids]), sites=["attn_probs"])
        maps.append(np.stack([acts[site_name("attn_probs", i)][0].float().numpy() for i in range(len(lm.layers))]))
        del lm, acts
    shapes = {m.shape for m in maps}
    if len(shapes) > 1:
        raise UserError("--attention: the checkpoints have different numbers of layers or heads")
    return np.stack(maps), labels


def _block(mat: np.ndarray) -> list[str]:
    """One T x T map as T strings of shade characters (values in [0, 1])."""
    idx = np.clip((mat * (len(SHADES) - 1)).round().astype(int), 0, len(SHADES) - 1)
    return ["".join(SHADES[i] for i in row) for row in idx]


def small_multiples(probs: np.ndarray, steps: Sequence[int], layer: int, *, heads: Sequence[int] | None = None,
                    width: int = 120) -> str:
    """The grid for one layer: a row per checkpoint, a column per head (wrapped to ``width``)."""
    n_ck, n_layers, n_heads, t, _ = probs.shape
    if not 0 <= layer < n_layers:
        raise UserError(f"--layer {layer}: the model has layers 0-{n_layers - 1}")
    heads = list(range(n_heads)) if heads is None else list(heads)
    for h in heads:
        if not 0 <= h < n_heads:
            raise UserError(f"--head {h}: the model has heads 0-{n_heads - 1}")
    lab_w = max(len(f"step {s}") for s in steps) + 1
    per_row = max(1, (width - lab_w) // (t + 2))
    out = [f"attention, layer {layer}: rows = checkpoints, columns = heads (query down, key across; "
           f"'{SHADES[1]}' low ... '{SHADES[-1]}' high)"]
    for g in range(0, len(heads), per_row):
        group = heads[g : g + per_row]
        out.append(" " * lab_w + "".join(f"h{h}".ljust(t + 2) for h in group).rstrip())
        for c in range(n_ck):
            blocks = [_block(probs[c, layer, h]) for h in group]
            for r in range(t):
                label = f"step {steps[c]}" if r == 0 else ""
                out.append(label.ljust(lab_w) + "".join("|" + b[r] + "|" for b in blocks).rstrip())
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def attention_summary(probs: np.ndarray) -> dict[str, Any]:
    """Per checkpoint and layer, the mean attention entropy (nats): falls as heads sharpen."""
    p = np.clip(probs, 1e-12, 1.0)
    ent = -(probs * np.log(p)).sum(-1).mean(axis=(2, 3))  # [checkpoints, layers]
    return {"entropy": ent.tolist()}
