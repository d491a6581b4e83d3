"""Direct logit attribution: how much each plan position's attention, MLP and heads add to a logit.

The final residual at the read position is a sum: ``x = embed + sum_p (attn_out.p + mlp_out.p)``
(plan positions ``p``, scales included). The final norm is linear in ``x`` once its *scale* is
frozen at the value it has for the whole ``x`` at that position:

* RMSNorm: ``norm(x) = w * x / rms(x)``, so component ``c`` maps to ``w * c / rms(x)``;
* LayerNorm: ``norm(x) = w * (x - mean(x)) / std(x) + b``; ``c`` maps to ``w * (c - mean(c)) / std(x)``
  and ``b`` is a term of its own (``norm_bias``);
* Gemma's RMSNorm multiplies by ``1 + w`` instead of ``w``.

Each mapped component dotted with the unembedding row of the target (minus that of the
baseline token, for a logit difference) is its direct contribution, and the contributions sum
to the model's logit (difference) exactly. A head's output is its slice of the attention
before the output projection (the ``attn_z`` hook) times its columns of ``attn.o`` times the
occurrence's ``attn_scale``; the heads of a position plus ``attn.o``'s bias (``attn_bias``) make
up its attention output. "Direct" means only the path straight to the logits: what a layer
does through later layers is not counted here (activation patching measures that).

Families that norm a branch's output before adding it (OLMo 2, Gemma 2/3: ``attn_post_norm``) get the
same treatment inside the branch: the heads (and ``attn.o``'s bias) map through that norm with its
scale frozen at the whole attention output, so they still add up to ``attn_out``.

Final-logit soft-capping (Gemma 2: ``logits = c * tanh(z / c)``) is not linear and cannot be split
into additive parts: the rows decompose ``z``, the logit *before* the cap (``logit``), and
``capped_logit`` is what the model outputs. For a difference of two logits ``z`` is the
difference of the pre-cap logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lminspect.errors import UserError
from lminspect.lens.readout import Target, plan_labels
from lminspect.models.layercall import LayerCall
from lminspect.models.sites import site_name
from lminspect.models.stored import linear_no_bias, weight_rows


@dataclass
class DLAResult:
    """Direct contributions to ``logit(target) [- logit(baseline)]`` at one token position."""

    plan: str
    labels: list[str]  # per plan position
    target: Target
    baseline: Target | None
    position: int
    logit: float  # what the model computes before any final soft cap (the contributions sum to it)
    embed: float  # the embedding's direct contribution
    attn: np.ndarray  # [P] attention output per plan position (heads + attn_bias)
    mlp: np.ndarray  # [P]
    heads: np.ndarray  # [P, H]
    attn_bias: np.ndarray  # [P] attn.o's bias (times attn_scale); zero for bias-free models
    norm_bias: float  # the final LayerNorm's bias term (0 for RMSNorm)
    scale: float  # 1/rms(x) (RMSNorm) or 1/std(x) (LayerNorm): the frozen final-norm scale
    capped_logit: float | None = None  # the model's output after its final soft cap (None: no cap)

    @property
    def total(self) -> float:
        """Sum of all direct contributions; equals ``logit`` up to float rounding."""
        return float(self.embed + self.attn.sum() + self.mlp.sum() + self.norm_bias)

    def rows(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{"row": "embed", "attn": None, "mlp": None, "total": self.embed}]
        for p, label in enumerate(self.labels):
            out.append({"row": label, "attn": float(self.attn[p]), "mlp": float(self.mlp[p]),
                        "total": float(self.attn[p] + self.mlp[p])})
        if self.norm_bias:
            out.append({"row": "norm bias", "attn": None, "mlp": None, "total": self.norm_bias})
        return out

    def __repr__(self) -> str:
        from lminspect.lens.render import dla_table, text_of

        return text_of(dla_table(self))

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan, "position": self.position, "logit": self.logit,
                "target": {"id": self.target.id, "text": self.target.text},
                "baseline": None if self.baseline is None else {"id": self.baseline.id, "text": self.baseline.text},
                "rows": self.rows(), "heads": self.heads.tolist(), "attn_bias": self.attn_bias.tolist(),
                "scale": self.scale, "capped_logit": self.capped_logit}


def _norm_map(norm: nn.Module, x: torch.Tensor) -> tuple[Any, float, float]:
    """(component -> normed component, frozen scale, bias vector or None) for the final norm at ``x [D]``."""
    w = 1.0 + norm.weight.float() if getattr(norm, "unit_offset", False) else norm.weight
    if isinstance(norm, nn.LayerNorm):
        scale = float(1.0 / torch.sqrt(x.var(unbiased=False) + norm.eps))
        return (lambda c: w * (c - c.mean(-1, keepdim=True)) * scale), scale, norm.bias
    eps = getattr(norm, "eps", None)
    if eps is None or getattr(norm, "bias", None) is not None:
        raise UserError(f"direct logit attribution does not know the final norm {type(norm).__name__}")
    scale = float(torch.rsqrt(x.pow(2).mean() + eps))
    return (lambda c: w * c * scale), scale, None


def _through_o(att: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Each head's output ``z [H, hd]`` mapped alone through ``attn.o`` (no bias): ``[H, D]``.
    Row h of the input holds head h's slice and zeros elsewhere, so a stored ``attn.o`` is read a
    chunk at a time instead of being made a float32 Parameter (2 GB over a 7B model's layers)."""
    n_head, hd = z.shape
    x = z.new_zeros(n_head, n_head, hd)
    x[torch.arange(n_head), torch.arange(n_head)] = z
    return linear_no_bias(att.o, x.view(n_head, n_head * hd))


@torch.inference_mode()
def direct_logit_attribution(lm: Any, ids: Sequence[int], target: Target, plan: list[LayerCall] | None = None, *,
                             baseline: Target | None = None, position: int = -1, plan_text: str = "all") -> DLAResult:
    """Per plan position (attention, MLP) and per head: the direct contribution to the target logit."""
    plan = lm._check_plan(plan)
    T = len(ids)
    pos = position + T if position < 0 else position
    if not 0 <= pos < T:
        raise UserError(f"token position {position} is out of range for a prompt of {T} tokens")
    x = torch.tensor([list(ids)], dtype=torch.long, device=lm.device)
    logits, acts = lm.run_with_cache(x, [site_name("resid_in", 0), "attn_out", "mlp_out", "attn_z"], plan=plan)
    head = getattr(lm, "head", None) or lm.__dict__.get("_tied_head") or lm.embed.tokens
    ids_u = [target.id] if baseline is None else [target.id, baseline.id]
    w_u = weight_rows(head, ids_u) * getattr(lm, "logit_scale", 1.0)  # Granite divides the logits
    d = w_u[0] - (w_u[1] if baseline is not None else 0)  # two rows: a 7B head is never made float32 whole
    final = acts[site_name("resid_in", 0)][0, pos] + sum(acts[site_name("attn_out", p)][0, pos] + acts[site_name("mlp_out", p)][0, pos]
                                             for p in range(len(plan)))
    nmap, scale, nbias = _norm_map(lm.norm, final)

    def direct(c: torch.Tensor) -> torch.Tensor:
        return (nmap(c).float() * d.float()).sum(-1)

    attn, mlp, heads, abias = [], [], [], []
    for p, call in enumerate(plan):
        att = lm.layers[call.index].attn
        z = acts[site_name("attn_z", p)][0, pos]  # [H, hd]
        block = lm.layers[call.index]
        k = call.attn_scale * getattr(block, "residual_scale", 1.0)
        per_head = _through_o(att, z)  # [H, D] in residual space
        bias = att.o.bias if att.o.bias is not None else torch.zeros_like(d)
        post = getattr(block, "attn_post_norm", None)
        if post is not None:  # normed before the residual add (OLMo 2, Gemma 2/3): its scale frozen, like the final norm
            pmap, _, pbias = _norm_map(post, per_head.sum(0) + bias)
            if pbias is not None:
                raise UserError(f"direct logit attribution does not know the post-attention norm {type(post).__name__}")
            per_head, bias = pmap(per_head), pmap(bias)
        heads.append(direct(per_head * k))
        abias.append(float(direct(bias * k)) if att.o.bias is not None else 0.0)
        attn.append(float(direct(acts[site_name("attn_out", p)][0, pos])))
        mlp.append(float(direct(acts[site_name("mlp_out", p)][0, pos])))
    lo = logits[0, pos].float()
    capped = None
    if getattr(lm, "logit_softcap", None) is not None:  # the rows split the logit before the cap
        capped = float(lo[target.id] - (lo[baseline.id] if baseline is not None else 0.0))
        lo = lm.raw_logits(final[None])[0].float()
    value = lo[target.id] - (lo[baseline.id] if baseline is not None else 0.0)
    return DLAResult(
        plan=plan_text, labels=plan_labels(plan), target=target, baseline=baseline, position=pos,
        logit=float(value), embed=float(direct(acts[site_name("resid_in", 0)][0, pos])), attn=np.array(attn), mlp=np.array(mlp),
        heads=torch.stack(heads).numpy() if heads else np.zeros((0, 0)), attn_bias=np.array(abias),
        norm_bias=float((nbias.float() * d.float()).sum()) if nbias is not None else 0.0, scale=scale,
        capped_logit=capped,
    )
