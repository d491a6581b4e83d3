"""The unit a layer plan is made of: which decoder block to run, and how loudly.

A plan is a ``list[LayerCall]``. The model runs its blocks in that order; the
same index may appear many times (repeats), and each occurrence has its own
KV-cache slot. ``lminspect.stitch`` parses the plan grammar into this list.

Head-level scaling is sparse (``((head, scale), ...)``) because a plan is parsed
knowing only the number of layers; the engine expands it to one factor per query
head when the occurrence runs (``head_factors``), which is where the head counts
are known and where a bad head index becomes a ``UserError``.
"""

from __future__ import annotations

from dataclasses import dataclass

HeadScales = tuple[tuple[int, float], ...]  # ((head index, scale), ...), sorted by head


@dataclass(frozen=True)
class LayerCall:
    index: int  # which decoder block (0-based, into model.layers)
    attn_scale: float = 1.0  # multiplies this occurrence's attention output before the residual add
    mlp_scale: float = 1.0  # multiplies this occurrence's MLP output before the residual add
    heads: HeadScales = ()  # per query head: scales that head's output (before the output projection)
    kv_heads: HeadScales = ()  # per KV group (GQA): scales every query head that reads that K/V head

    @property
    def has_head_scales(self) -> bool:
        return bool(self.heads or self.kv_heads)

    def head_factors(self, n_head: int, n_kv_head: int) -> list[float] | None:
        """One factor per query head (None when no head is scaled); ``kv_heads`` entry ``g``
        covers query heads ``g*r .. g*r+r-1`` with ``r = n_head // n_kv_head`` (HF's grouping)."""
        if not (self.heads or self.kv_heads):
            return None
        from lminspect.errors import UserError

        f = [1.0] * n_head
        rep = n_head // n_kv_head
        for g, s in self.kv_heads:
            if not 0 <= g < n_kv_head:
                raise UserError(f"plan: layer {self.index} has {n_kv_head} KV heads (0-{n_kv_head - 1}); "
                                f"kv[{g}] is out of range")
            for h in range(g * rep, (g + 1) * rep):
                f[h] *= s
        for h, s in self.heads:
            if not 0 <= h < n_head:
                raise UserError(f"plan: layer {self.index} has {n_head} heads (0-{n_head - 1}); "
                                f"heads[{h}] is out of range")
            f[h] *= s
        return f


def full_plan(n_layers: int) -> list[LayerCall]:
    """The unstitched model: every block once, in order."""
    return [LayerCall(i) for i in range(n_layers)]
