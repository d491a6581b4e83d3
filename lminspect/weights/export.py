"""HF export: a canonical state dict -> a HF model directory that transformers loads.

The inverse of the weight store's reading (:mod:`lminspect.weights.naming`): canonical
names go back to each family's HF names, GPT-2's Conv1D weights are transposed back and
q/k/v are fused again (GPT-2 ``c_attn``, Falcon ``query_key_value``). Used by
``lminspect stitch export`` (:func:`lminspect.stitch.export_stitched`) and ``quick_model``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lminspect.errors import UserError
from lminspect.fsutil import atomic_dir
from lminspect.weights.naming import canonical_to_hf_llama

__all__ = ["hf_state_dict", "model_family", "write_hf_dir"]


def _gpt2_hf_state(sd: dict[str, Any]) -> dict[str, Any]:
    """Canonical GPT-2 tensors -> HF names (Conv1D weights transposed, q/k/v fused into c_attn)."""
    import torch

    out: dict[str, Any] = {}
    simple = {"embed.tokens": "transformer.wte", "embed.positions": "transformer.wpe", "norm": "transformer.ln_f"}
    sub = {"attn_norm": "ln_1", "mlp_norm": "ln_2", "attn.o": "attn.c_proj", "mlp.up": "mlp.c_fc", "mlp.down": "mlp.c_proj"}
    for cname, t in sd.items():
        stem, _, kind = cname.rpartition(".")
        if stem in simple:
            out[f"{simple[stem]}.{kind}"] = t
            continue
        if stem == "head":
            continue  # tied to wte in GPT-2
        m = re.match(r"^layers\.(\d+)\.(.+)$", stem)
        if not m:
            raise UserError(f"cannot export tensor {cname} as GPT-2")
        i, part = m[1], m[2]
        if part in ("attn.q", "attn.k", "attn.v"):
            continue
        conv = part in ("attn.o", "mlp.up", "mlp.down") and kind == "weight"
        out[f"transformer.h.{i}.{sub[part]}.{kind}"] = t.t().contiguous() if conv else t
    n = 1 + max((int(k.split(".")[1]) for k in sd if k.startswith("layers.")), default=-1)
    for i in range(n):
        q, k, v = (sd[f"layers.{i}.attn.{x}.weight"] for x in "qkv")
        out[f"transformer.h.{i}.attn.c_attn.weight"] = torch.cat([q, k, v], 0).t().contiguous()
        if f"layers.{i}.attn.q.bias" in sd:
            out[f"transformer.h.{i}.attn.c_attn.bias"] = torch.cat(
                [sd[f"layers.{i}.attn.{x}.bias"] for x in "qkv"], 0
            )
    return out


_FALCON_SUB = {
    "attn_norm": "input_layernorm",
    "mlp_norm": "post_attention_layernorm",
    "attn.o": "self_attention.dense",
    "mlp.up": "mlp.dense_h_to_4h",
    "mlp.down": "mlp.dense_4h_to_h",
}


def _falcon_fuse_qkv(q: Any, k: Any, v: Any, n_head: int, multi_query: bool) -> Any:
    """Canonical q/k/v (weights or biases) -> HF Falcon's fused ``query_key_value`` rows.

    The inverse of the weight store's split (``naming._falcon_qkv``) for the two layouts the
    engine runs: multi-query is ``[q (n_head heads), k (1 head), v (1 head)]``; the classic
    RW layout interleaves per head, ``[n_head, 3, head_dim]`` (``FalconAttention._split_heads``).
    """
    import torch

    hd = q.shape[0] // n_head
    n_kv = 1 if multi_query else n_head
    if q.shape[0] != n_head * hd or k.shape[0] != n_kv * hd or v.shape[0] != n_kv * hd:
        raise UserError(
            f"cannot export falcon attention: q/k/v have {q.shape[0]}/{k.shape[0]}/{v.shape[0]} rows, "
            f"expected {n_head * hd}/{n_kv * hd}/{n_kv * hd} for {n_head} heads"
            f"{' (multi_query)' if multi_query else ''}"
        )
    if multi_query:
        return torch.cat([q, k, v], 0)
    rest = tuple(q.shape[1:])
    parts = [t.reshape(n_head, hd, *rest) for t in (q, k, v)]
    return torch.stack(parts, 1).reshape(3 * n_head * hd, *rest)


def _falcon_hf_state(sd: dict[str, Any], hf_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical Falcon tensors -> HF ``FalconForCausalLM`` names (q/k/v fused into ``query_key_value``)."""
    if hf_cfg.get("new_decoder_architecture"):
        raise UserError(
            "stitch export supports falcon only with new_decoder_architecture=false "
            "(the RW / 7B layouts the engine runs)"
        )
    n_head = int(hf_cfg.get("num_attention_heads") or hf_cfg.get("n_head") or 0)
    if n_head < 1:
        raise UserError("cannot export falcon: config lacks num_attention_heads")
    multi_query = bool(hf_cfg.get("multi_query", True))
    out: dict[str, Any] = {}
    layers: set[str] = set()
    for cname, t in sd.items():
        stem, _, kind = cname.rpartition(".")
        if stem == "embed.tokens":
            out[f"transformer.word_embeddings.{kind}"] = t
            continue
        if stem == "norm":
            out[f"transformer.ln_f.{kind}"] = t
            continue
        if stem == "head":
            out[f"lm_head.{kind}"] = t
            continue
        m = re.match(r"^layers\.(\d+)\.(.+)$", stem)
        if not m or m[2] not in (*_FALCON_SUB, "attn.q", "attn.k", "attn.v"):
            raise UserError(f"cannot export tensor {cname} as falcon")
        i, part = m[1], m[2]
        if part in ("attn.q", "attn.k", "attn.v"):
            layers.add(i)
            continue
        out[f"transformer.h.{i}.{_FALCON_SUB[part]}.{kind}"] = t
    for i in sorted(layers, key=int):
        for kind in ("weight", "bias"):
            names = [f"layers.{i}.attn.{x}.{kind}" for x in "qkv"]
            if all(n in sd for n in names):
                out[f"transformer.h.{i}.self_attention.query_key_value.{kind}"] = _falcon_fuse_qkv(
                    *(sd[n] for n in names), n_head, multi_query
                )
            elif any(n in sd for n in names):
                raise UserError(f"cannot export falcon layer {i}: q/k/v {kind}s are incomplete")
    return out


def hf_state_dict(arch: str, sd: dict[str, Any], hf_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical state dict -> the HF ``*ForCausalLM`` state dict of ``arch`` (llama, gpt2, falcon)."""
    if arch == "llama":
        return {canonical_to_hf_llama(k): v for k, v in sd.items()}
    if arch == "gpt2":
        return _gpt2_hf_state(sd)
    if arch == "falcon":
        return _falcon_hf_state(sd, hf_cfg)
    raise UserError(f"stitch export supports llama, gpt2 and falcon models, not {arch}")


def model_family(model: Any, hf_cfg: Mapping[str, Any]) -> str:
    """The export family of an engine model: ``llama``, ``gpt2``, ``falcon``, or its own arch name."""
    arch = getattr(model, "arch", None) or getattr(getattr(model, "config", None), "arch", None)
    if not isinstance(arch, str):
        arch = str(hf_cfg.get("model_type", "")).lower() or type(model).__name__.lower()
    if arch.startswith("gpt2"):
        return "gpt2"
    if "llama" in arch:
        return "llama"
    if "falcon" in arch or arch in ("refinedweb", "refinedwebmodel", "rw"):
        return "falcon"
    return arch


def write_hf_dir(
    out_dir: str | Path,
    hf_sd: Mapping[str, Any],
    hf_cfg: Mapping[str, Any],
    *,
    tokenizer_json: str | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (+ ``tokenizer.json``, extra files) atomically."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        save_file({k: v.contiguous() for k, v in hf_sd.items()}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(dict(hf_cfg), indent=2, default=str) + "\n", encoding="utf-8")
        if tokenizer_json:
            (tmp / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
    return out_dir
