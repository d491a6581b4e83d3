"""What the RoPE families beyond Llama share: partial rotary, sliding-window layers with their
own RoPE base, Gemma's ``(1 + w)`` RMSNorm and StableLM's per-head LayerNorm.

``RotaryLM`` is an ``LM`` whose subclasses set ``rotary_dim``, ``rope_theta`` and optionally
``window`` / ``local_theta`` before ``_build``. Attention modules with a ``window`` are the sliding
layers: their mask is ``run.wbias`` (models/window.py) and, when ``local_theta`` is set, their RoPE
tables are ``run.local_rope``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lminspect.errors import UserError
from lminspect.models.common import LM, _Run
from lminspect.models.rope import scaled_rope_tables


class OffsetRMSNorm(nn.Module):
    """Gemma's RMSNorm: ``x / rms(x) * (1 + w)``, all in float32 then cast back (as transformers
    computes it; Llama's casts before the weight). The weight starts at zero."""

    unit_offset = True  # the gain is 1 + weight (read by direct logit attribution)

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return (h * (1.0 + self.weight.float())).type_as(x)


class HeadLayerNorm(nn.Module):
    """StableLM's q/k LayerNorm: one bias-free LayerNorm per head over ``[B, H, T, head_dim]``
    (``norms.{h}.weight``, HF's own layout, so loading is a rename)."""

    def __init__(self, n_head: int, head_dim: int, eps: float) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(head_dim, eps=eps, bias=False) for _ in range(n_head))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., H, head_dim]``: head h through ``norms[h]``."""
        return torch.cat([n(h) for n, h in zip(self.norms, torch.split(x, 1, dim=-2), strict=True)], dim=-2)


def rope_params(cfg: dict, family: str, default_theta: float = 10000.0, layer_type: str | None = None,
                scalings: tuple[str, ...] = ()) -> tuple[float, float, dict]:
    """``(theta, linear factor, params)`` from transformers 5's ``rope_parameters`` (per layer type
    for Gemma 3) or 4's ``rope_scaling``; ``default_theta`` is the caller's transformers-4 key.
    A scaling type other than ``default`` and those in ``scalings`` (``linear``) is refused."""
    params = cfg.get("rope_parameters")
    if isinstance(params, dict) and layer_type is not None and isinstance(params.get(layer_type), dict):
        params = params[layer_type]
    params = params if isinstance(params, dict) else {}
    srcs = [params]
    if layer_type != "sliding_attention" and isinstance(cfg.get("rope_scaling"), dict):
        srcs.append(cfg["rope_scaling"])
    factor = 1.0
    for src in srcs:
        kind = src.get("rope_type", src.get("type")) or "default"
        if kind != "default" and kind not in scalings:
            refuse(family, "rope scaling", kind, "none" + "".join(f" or {s!r}" for s in scalings))
        if kind == "linear":
            factor = float(src.get("factor", 1.0))
    return float(params.get("rope_theta") or default_theta), factor, params


def refuse(family: str, key: str, value: Any, expected: str) -> None:
    """One line for a config value whose math the engine does not implement."""
    raise UserError(f"{family} with {key}={value!r} is not supported (expected {expected})")


class RotaryLM(LM):
    """An ``LM`` with (partial) RoPE and optional sliding-window layers (see the module doc)."""

    rotary_dim: int
    rope_theta: float
    rope_factor: float = 1.0  # linear RoPE scaling of the global layers (Gemma 3)
    window: int | None = None  # sliding-window layers see this many positions (themselves included)
    local_theta: float | None = None  # RoPE base of the sliding layers when it differs (Gemma 3)

    def _make_buffers(self) -> None:
        """RoPE cos/sin ``[context, rotary_dim]`` (and the sliding layers' own), not in state_dict."""
        n = self.config.context_length
        linear = {"rope_type": "linear", "factor": self.rope_factor} if self.rope_factor != 1.0 else None
        cos, sin = scaled_rope_tables(self.rotary_dim, self.rope_theta, n, linear, n)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        if self.local_theta is not None:
            cos, sin = scaled_rope_tables(self.rotary_dim, self.local_theta, n, None, n)
            self.register_buffer("rope_cos_local", cos, persistent=False)
            self.register_buffer("rope_sin_local", sin, persistent=False)

    def _tables(self, cos: torch.Tensor, sin: torch.Tensor, start: int, T: int, rows: torch.Tensor | None):
        if rows is not None:  # per-row positions [B, T] -> tables [B, 1, T, D]
            return cos[rows][:, None], sin[rows][:, None]
        return cos[start:start + T], sin[start:start + T]

    def _extras(self, start: int, T: int, L: int, rows=None):
        return (*self._tables(self.rope_cos, self.rope_sin, start, T, rows), None)

    def _with_local(self, run: _Run, start: int, T: int, rows: torch.Tensor | None) -> _Run:
        if self.local_theta is not None:
            cos, sin = self._tables(self.rope_cos_local, self.rope_sin_local, start, T, rows)
            run.local_rope = (cos.to(run.cos.dtype), sin.to(run.sin.dtype))
        return run

    def _context(self, start: int, T: int, dtype: torch.dtype, cache=None, pad=None, rows=None) -> _Run:
        return self._with_local(super()._context(start, T, dtype, cache, pad, rows), start, T, rows)

    def prepare_tree(self, input_ids, positions, allowed, causal_head: int = 0):
        x, run = super().prepare_tree(input_ids, positions, allowed, causal_head)
        return x, self._with_local(run, 0, input_ids.shape[1], positions)


def check_window(family: str, window: Any) -> int | None:
    """A sliding window from the config: None, or a positive integer."""
    if window is None:
        return None
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        refuse(family, "sliding_window", window, "a positive integer or null")
    return int(window)


__all__ = ["HeadLayerNorm", "OffsetRMSNorm", "RotaryLM", "check_window", "refuse", "rope_params"]
