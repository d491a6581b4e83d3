"""Training FLOPs estimate (the nanoGPT / PaLM appendix-B formula), logged as ``flops`` in stats.jsonl.

Per token: ``6 * N + 12 * L * d_attn * T`` where ``N`` counts the parameters that take part in a
matrix multiply (everything except the position table and, for an untied model, the token
lookup table; a tied table is counted once, as the head), ``L`` the blocks, ``d_attn =
n_head * head_dim`` and ``T`` the sequence length. 6N is the forward (2N) plus backward (4N)
of the dense layers; the second term is the attention scores and weighted sum (QK^T and AV,
2 * 2 * T * d_attn per token per layer forward, times 3 for backward), with the full T like
nanoGPT's ``estimate_mfu`` (no causal halving). Norms, activations and the softmax are ignored.
"""

from __future__ import annotations

from typing import Any


def matmul_params(model: Any) -> int:
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    tied = getattr(model, "head", None) is None
    n = 0
    for name, p in model.named_parameters():
        if name.startswith("embed.positions"):
            continue
        if name.startswith("embed.tokens") and not tied:
            continue
        n += p.numel()
    return n


def flops_per_token(model: Any, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward) of ``model`` at sequence length ``seq_len``."""
    base = getattr(model, "module", model)
    base = getattr(base, "_orig_mod", base)
    layers = getattr(base, "layers", [])
    d_attn = 0
    for block in layers:
        attn = getattr(block, "attn", None)
        if attn is not None:
            d_attn += attn.n_head * attn.head_dim
    return 6.0 * matmul_params(base) + 12.0 * d_attn * seq_len
