"""What a plan does to a model: layers run, skipped, repeated; parameters touched; compute."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lminspect.models.layercall import LayerCall
from lminspect.stitch.grammar import plan_to_string

if TYPE_CHECKING:  # annotations only
    from lminspect.models.common import LM


@dataclass
class PlanSummary:
    """What a plan does to a model, for tables and ``stitch show``."""

    n_layers: int  # blocks in the model
    calls: int  # blocks run per token (len(plan)): compute relative to baseline is calls / n_layers
    unique: int  # distinct blocks used
    skipped: list[int]  # blocks never run
    repeated: dict[int, int]  # block -> times run, for blocks run more than once
    scaled: int  # occurrences with a non-unit branch or head scale
    params_touched: float  # fraction of the model's parameters the plan reads (embeddings/norm/head included)
    compute: float  # calls / n_layers
    text: str = field(default="")  # compact grammar

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_layers": self.n_layers,
            "calls": self.calls,
            "unique": self.unique,
            "skipped": self.skipped,
            "repeated": {str(k): v for k, v in self.repeated.items()},
            "scaled": self.scaled,
            "params_touched": self.params_touched,
            "compute": self.compute,
            "plan": self.text,
        }


def _layer_param_counts(model: LM) -> tuple[list[int], int]:
    per_layer = [sum(p.numel() for p in layer.parameters()) for layer in model.layers]
    total = sum(p.numel() for p in model.parameters())
    return per_layer, total


def describe_plan(plan: list[LayerCall], n_layers: int | None = None, *, model: LM | None = None) -> PlanSummary:
    """Layers run, skipped and repeated, and the fraction of parameters the plan touches.

    With a ``model``, parameter counts are exact (shared embeddings, norms and the head
    always count as touched); without one, every block is assumed equal and only the
    decoder blocks are counted.
    """
    if n_layers is None:
        if model is None:
            raise ValueError("describe_plan needs n_layers or model")
        n_layers = len(model.layers)
    used = [c.index for c in plan]
    uniq = sorted(set(used))
    counts: dict[int, int] = {}
    for i in used:
        counts[i] = counts.get(i, 0) + 1
    if model is not None and hasattr(model, "layers") and hasattr(model, "parameters"):
        per_layer, total = _layer_param_counts(model)
        skipped_params = sum(per_layer[i] for i in range(n_layers) if i not in counts)
        touched = (total - skipped_params) / total if total else 0.0
    else:
        touched = len(uniq) / n_layers
    return PlanSummary(
        n_layers=n_layers,
        calls=len(plan),
        unique=len(uniq),
        skipped=[i for i in range(n_layers) if i not in counts],
        repeated={i: k for i, k in sorted(counts.items()) if k > 1},
        scaled=sum(1 for c in plan if (c.attn_scale, c.mlp_scale) != (1.0, 1.0) or c.has_head_scales),
        params_touched=touched,
        compute=len(plan) / n_layers,
        text=plan_to_string(plan, n_layers),
    )
