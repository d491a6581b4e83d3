"""The peer for activation patching: the same sweep written with plain HF forward hooks.

One forward of the whole corrupted prompt per patched cell, as a notebook would write it; used
by ``benchmarks/bench_patch.py`` (speed) and by ``tests/test_lens_oracle.py`` (correctness).
Supports HF Llama, GPT-2 and Falcon models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def parts(hf: Any) -> dict[str, Any]:
    """The decoder layers, final norm and head of a HF causal LM, and per-layer module getters."""
    if hasattr(hf, "model") and hasattr(hf.model, "layers"):  # llama
        return {"layers": hf.model.layers, "norm": hf.model.norm, "head": hf.lm_head,
                "attn": lambda b: b.self_attn, "mlp": lambda b: b.mlp, "o": lambda b: b.self_attn.o_proj}
    tr = hf.transformer
    if hasattr(tr, "wte"):  # gpt2
        return {"layers": tr.h, "norm": tr.ln_f, "head": hf.lm_head,
                "attn": lambda b: b.attn, "mlp": lambda b: b.mlp, "o": lambda b: b.attn.c_proj}
    return {"layers": tr.h, "norm": tr.ln_f, "head": hf.lm_head,  # falcon
            "attn": lambda b: b.self_attention, "mlp": lambda b: b.mlp, "o": lambda b: b.self_attention.dense}


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def _replace_first(out: Any, new: torch.Tensor) -> Any:
    return (new, *out[1:]) if isinstance(out, tuple) else new


def _module_and_kind(p: dict[str, Any], site: str, layer: int) -> tuple[Any, str]:
    block = p["layers"][layer]
    return {"resid": (block, "pre"), "attn": (p["attn"](block), "out"), "mlp": (p["mlp"](block), "out"),
            "head": (p["o"](block), "pre")}[site]


def _hidden_in(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def capture(hf: Any, ids: torch.Tensor, site: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Last-position logits and, per layer, the site's activation on one forward."""
    p = parts(hf)
    acts: list[Any] = [None] * len(p["layers"])
    handles = []
    for i in range(len(p["layers"])):
        mod, kind = _module_and_kind(p, site, i)
        if kind == "pre":
            def pre(m, args, kwargs, i=i):
                acts[i] = _hidden_in(args, kwargs).detach().clone()
            handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
        else:
            def post(m, args, out, i=i):
                acts[i] = _first(out).detach().clone()
            handles.append(mod.register_forward_hook(post))
    try:
        with torch.no_grad():
            logits = hf(ids).logits[:, -1]
    finally:
        for h in handles:
            h.remove()
    return logits, acts


def patch_sweep(hf: Any, clean: list[int], corrupt: list[int], metric: Callable[[torch.Tensor], torch.Tensor],
                site: str = "resid", n_heads: int | None = None, layers: list[int] | None = None) -> torch.Tensor:
    """Metric after patching each (layer, token) -- or (layer, head) -- from clean into corrupt:
    one full forward of the corrupted prompt per cell. Returns ``[layers, tokens | heads]``
    (``layers``: only these layers, in that order)."""
    p = parts(hf)
    c = torch.tensor([clean])
    x = torch.tensor([corrupt])
    _, clean_acts = capture(hf, c, site)
    n_layers, T = len(p["layers"]), len(clean)
    n_cols = n_heads if site == "head" else T
    layers = list(range(n_layers)) if layers is None else layers
    out = torch.zeros(len(layers), n_cols)
    for row, layer in enumerate(layers):
        mod, kind = _module_and_kind(p, site, layer)
        src = clean_acts[layer]
        for j in range(n_cols):
            if site == "head":
                hd = src.shape[-1] // n_heads
                sl = slice(j * hd, (j + 1) * hd)

                def pre(m, args, kwargs, sl=sl, src=src):
                    h = args[0].clone()
                    h[..., sl] = src[..., sl]
                    return (h, *args[1:]), kwargs
                handle = mod.register_forward_pre_hook(pre, with_kwargs=True)
            elif kind == "pre":
                def pre(m, args, kwargs, j=j, src=src):
                    h = _hidden_in(args, kwargs).clone()
                    h[:, j] = src[:, j]
                    if args:
                        return (h, *args[1:]), kwargs
                    return args, {**kwargs, "hidden_states": h}
                handle = mod.register_forward_pre_hook(pre, with_kwargs=True)
            else:
                def post(m, args, o, j=j, src=src):
                    h = _first(o).clone()
                    h[:, j] = src[:, j]
                    return _replace_first(o, h)
                handle = mod.register_forward_hook(post)
            try:
                with torch.no_grad():
                    out[row, j] = metric(hf(x).logits[:, -1])[0]
            finally:
                handle.remove()
    return out
