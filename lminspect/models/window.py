"""Sliding-window attention (Mistral, Qwen2's windowed layers): the additive bias of windowed layers.

A query at position p sees the keys at positions p - window + 1 .. p (transformers'
``sliding_window`` masks: ``kv_idx > q_idx - sliding_window``). The KV cache keeps every key; the
window is a mask, so a decode step with a window shorter than the prompt still sees exactly the
last ``window`` keys.
"""

from __future__ import annotations

import torch


def window_bias(bias: torch.Tensor | None, start: int, T: int, L: int, window: int, dtype: torch.dtype,
                device: torch.device, positions: torch.Tensor | None = None) -> torch.Tensor | None:
    """``bias`` (``[B|1, H|1, T, L]`` additive, or None for plain causal) with keys outside the window
    hidden; None when the window never binds (no query is ``window`` or more tokens past a key).

    Without ``positions`` a column is a position (left padding shifts query and key alike); with
    ``positions`` ``[B, T]`` (token trees, keys = queries) the distance is by position."""
    if positions is not None:
        dist = positions[:, :, None] - positions[:, None, :]  # [B, T, T]
        if int(dist.max()) < window:
            return None
        return bias.masked_fill((dist >= window)[:, None], float("-inf"))
    if L <= window:
        return None
    q = torch.arange(start, start + T, device=device)[:, None]
    k = torch.arange(L, device=device)[None, :]
    if bias is None:
        bias = torch.zeros(T, L, dtype=dtype, device=device).masked_fill(k > q, float("-inf"))[None, None]
    return bias.masked_fill(q - k >= window, float("-inf"))
