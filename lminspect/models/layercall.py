"""The unit a layer plan is made of: which decoder block to run, and how loudly.

A plan is a ``list[LayerCall]``. The model runs its blocks in that order; the
same index may appear many times (repeats), and each occurrence has its own
KV-cache slot. ``lminspect.stitch`` parses the plan grammar into this list.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerCall:
    index: int  # which decoder block (0-based, into model.layers)
    attn_scale: float = 1.0  # multiplies this occurrence's attention output before the residual add
    mlp_scale: float = 1.0  # multiplies this occurrence's MLP output before the residual add


def full_plan(n_layers: int) -> list[LayerCall]:
    """The unstitched model: every block once, in order."""
    return [LayerCall(i) for i in range(n_layers)]
