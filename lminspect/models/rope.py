"""RoPE frequency tables with the scalings of transformers' ``modeling_rope_utils``: ``linear``,
``dynamic``, ``yarn`` and ``llama3``, computed with the same float32 operations in the same order.

``dynamic`` (NTK) changes the base only for sequences longer than ``max_position_embeddings``, which
the engine never runs (it is the context limit), so within the context it is the default table.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lminspect.errors import UserError

SCALINGS = ("default", "linear", "dynamic", "yarn", "llama3", "freq_factors")


def _default_inv_freq(dim: int, theta: float) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def _yarn(dim: int, theta: float, p: dict[str, Any], max_pos: int) -> tuple[torch.Tensor, float]:
    factor = p.get("factor")
    orig = p["original_max_position_embeddings"]
    if factor is None:
        factor = max_pos / orig
    att = p.get("attention_factor")
    mscale, mscale_all = p.get("mscale"), p.get("mscale_all_dim")

    def get_mscale(scale: float, m: float = 1) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0
    if att is None:
        att = float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all)) if mscale and mscale_all \
            else get_mscale(factor)
    beta_fast, beta_slow = p.get("beta_fast") or 32, p.get("beta_slow") or 1

    def corr_dim(rot: float) -> float:
        return (dim * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(theta))
    low, high = corr_dim(beta_fast), corr_dim(beta_slow)
    if p.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    pos_freqs = theta ** (torch.arange(0, dim, 2).to(dtype=torch.float) / dim)
    extra, inter = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    keep = 1 - ramp
    return inter * (1 - keep) + extra * keep, float(att)


def _llama3(dim: int, theta: float, p: dict[str, Any]) -> torch.Tensor:
    inv = _default_inv_freq(dim, theta)
    factor, lo, hi = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
    old = p["original_max_position_embeddings"]
    lo_wl, hi_wl = old / lo, old / hi
    wavelen = 2 * math.pi / inv
    out = torch.where(wavelen > lo_wl, inv / factor, inv)
    smooth = (old / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = ~(wavelen < hi_wl) * ~(wavelen > lo_wl)
    return torch.where(medium, smoothed, out)


def inv_freq(dim: int, theta: float, scaling: dict[str, Any] | None, max_pos: int) -> tuple[torch.Tensor, float]:
    """(inverse frequencies [dim/2], factor on cos/sin) for a rope-scaling dict (None: plain RoPE)."""
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type")) or "default"
    if kind in ("default", "dynamic"):
        return _default_inv_freq(dim, theta), 1.0
    if kind == "linear":
        return _default_inv_freq(dim, theta) / scaling["factor"], 1.0
    if kind == "yarn":
        return _yarn(dim, theta, scaling, max_pos)
    if kind == "llama3":
        return _llama3(dim, theta, scaling), 1.0
    if kind == "freq_factors":  # a GGUF's rope_freqs: llama.cpp divides each frequency by its factor
        return _default_inv_freq(dim, theta) / torch.tensor(scaling["factors"], dtype=torch.float32), 1.0
    raise ValueError(f"unknown rope scaling {kind!r}")


def scaled_rope_tables(dim: int, theta: float, length: int, scaling: dict[str, Any] | None,
                       max_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [length, dim] in float32, as transformers' rotary embedding computes them."""
    inv, att = inv_freq(dim, theta, scaling, max_pos)
    pos = torch.arange(length, dtype=torch.int64).float()
    freqs = pos[:, None] * inv[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    if att == 1.0:
        return emb.cos(), emb.sin()
    return emb.cos() * att, emb.sin() * att


def rope_scaling_of(cfg: dict, allowed: tuple[str, ...] = ("default",)) -> dict | None:
    """The rope-scaling dict of a config (``rope_parameters`` in transformers 5, ``rope_scaling`` in 4),
    None for plain RoPE; a type not in ``allowed`` is refused rather than silently ignored."""
    found = None
    for src in (cfg.get("rope_parameters"), cfg.get("rope_scaling")):
        kind = src.get("rope_type", src.get("type", "default")) if isinstance(src, dict) else "default"
        if kind not in (None, "default", *allowed):
            raise UserError(f"unsupported rope scaling type {kind!r} in config (expected one of {', '.join(allowed)})")
        if kind not in (None, "default") and found is None:
            found = {k: v for k, v in src.items() if k != "type"} | {"rope_type": kind}
    return found
