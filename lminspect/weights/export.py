"""HF export: a canonical state dict -> a HF model directory that transformers loads.

The inverse of the weight store's reading (:mod:`lminspect.weights.naming`): canonical
names go back to each family's HF names, GPT-2's Conv1D weights are transposed back and
q/k/v are fused again (GPT-2 ``c_attn``, Falcon ``query_key_value``). Used by
``lminspect stitch export`` (:func:`lminspect.stitch.export_stitched`) and ``quick_model``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lminspect.errors import UserError
from lminspect.fsutil import atomic_dir
from lminspect.weights.families import family_of, spec_named, supported_names
from lminspect.weights.naming import HF_TABLES

__all__ = ["hf_state_dict", "model_family", "tokenizer_side_files", "write_hf_dir"]


_QKV = re.compile(r"layers\.(\d+)\.attn\.[qkv]")
_GATE_UP = re.compile(r"layers\.(\d+)\.mlp\.(gate|up)")


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


def _fuser(arch: str, hf_cfg: Mapping[str, Any]) -> Callable[[Any, Any, Any, str], Any]:
    """How ``arch`` fuses canonical q/k/v back into one HF tensor (weights or biases)."""
    import torch

    if arch == "gpt2":  # Conv1D: [in, 3*out]
        return lambda q, k, v, kind: torch.cat([q, k, v], 0).t().contiguous() if kind == "weight" else torch.cat(
            [q, k, v], 0)
    if arch == "phi3":  # rows [q | k | v]
        return lambda q, k, v, kind: torch.cat([q, k, v], 0)
    if arch == "gptneox":  # Falcon-RW's per-head interleave, always
        n = int(hf_cfg.get("num_attention_heads") or 0)
        return lambda q, k, v, kind: _falcon_fuse_qkv(q, k, v, n, False)
    if hf_cfg.get("new_decoder_architecture"):
        raise UserError(
            "stitch export supports falcon only with new_decoder_architecture=false "
            "(the RW / 7B layouts the engine runs)"
        )
    n_head = int(hf_cfg.get("num_attention_heads") or hf_cfg.get("n_head") or 0)
    if n_head < 1:
        raise UserError("cannot export falcon: config lacks num_attention_heads")
    multi_query = bool(hf_cfg.get("multi_query", True))
    return lambda q, k, v, kind: _falcon_fuse_qkv(q, k, v, n_head, multi_query)


def hf_state_dict(arch: str, sd: dict[str, Any], hf_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical state dict -> the HF ``*ForCausalLM`` state dict of ``arch`` (llama, gpt2, falcon).

    Names come from the same tables the weight store reads with (``naming.HF_TABLES``); GPT-2's
    Conv1D weights are transposed back and fused q/k/v modules are fused again. A canonical
    tensor HF has no module for (e.g. a value-norm experiment's ``attn.v_norm``) is refused.
    """
    table = HF_TABLES.get(arch)
    spec = spec_named(arch)
    if table is None or spec is None or not spec.supported:
        raise UserError(f"stitch export supports {supported_names()} models, not {arch}")
    hf_class = spec.architectures[0] if spec.architectures else arch
    rope = hf_cfg.get("rope_parameters")
    if isinstance(rope, Mapping) and rope.get("rope_type") == "freq_factors":
        raise UserError("cannot export: the model's RoPE comes from a GGUF rope_freqs table, which has no "
                        "transformers config equivalent (export the original HF model instead)")
    fuse = _fuser(arch, hf_cfg) if table.fused_qkv else None
    out: dict[str, Any] = {}
    fused_layers: set[str] = set()
    for cname, t in sd.items():
        module, _, kind = cname.rpartition(".")
        m = _QKV.fullmatch(module)
        if m and fuse is not None:
            fused_layers.add(m[1])
            continue
        if table.fused_gate_up and _GATE_UP.fullmatch(module):
            continue  # fused below, with its pair
        if arch == "gpt2" and module == "head":
            continue  # tied to wte in GPT-2
        try:
            name = table.to_hf(cname)
        except KeyError:
            raise UserError(
                f"cannot export tensor {cname} as {arch}: HF's {hf_class} has no such module"
            ) from None
        conv = module.startswith("layers.") and module.split(".", 2)[2] in table.conv1d and kind == "weight"
        out[name] = t.t().contiguous() if conv else t
    for i in sorted(fused_layers, key=int):
        for kind in ("weight", "bias"):
            names = [f"layers.{i}.attn.{x}.{kind}" for x in "qkv"]
            if all(n in sd for n in names):
                out[f"{table.block.format(N=i)}{table.fused_qkv}.{kind}"] = fuse(*(sd[n] for n in names), kind)
            elif any(n in sd for n in names):
                raise UserError(f"cannot export {arch} layer {i}: q/k/v {kind}s are incomplete")
    if table.fused_gate_up:  # Phi-3: rows [gate | up]
        import torch

        for cname in sd:
            m = _GATE_UP.fullmatch(cname.rpartition(".")[0])
            if m and m[2] == "gate":
                kind = cname.rpartition(".")[2]
                up = sd.get(f"layers.{m[1]}.mlp.up.{kind}")
                if up is None:
                    raise UserError(f"cannot export {arch} layer {m[1]}: mlp.up.{kind} is missing")
                out[f"{table.block.format(N=m[1])}{table.fused_gate_up}.{kind}"] = torch.cat([sd[cname], up], 0)
    return out


def model_family(model: Any, hf_cfg: Mapping[str, Any]) -> str:
    """The export family of an engine model: the family its HF config names (weights/families.py)
    when the model's engine runs that family, else the model's own arch name."""
    arch = getattr(model, "arch", None) or getattr(getattr(model, "config", None), "arch", None)
    if not isinstance(arch, str):
        arch = type(model).__name__.lower()
    spec, own = family_of(hf_cfg), spec_named(arch)
    if spec is not None and own is not None and spec.engine == own.engine:
        return spec.name
    return arch


def write_hf_dir(
    out_dir: str | Path,
    hf_sd: Mapping[str, Any],
    hf_cfg: Mapping[str, Any],
    *,
    tokenizer_json: str | None = None,
    extra_files: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model.safetensors`` (with ``metadata`` in its header) + ``config.json``
    (+ ``tokenizer.json``, extra files) atomically."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    need = sum(v.numel() * v.element_size() for v in hf_sd.values())  # for a full disk's one line
    with atomic_dir(out_dir, need=need) as tmp:
        save_file({k: v.contiguous() for k, v in hf_sd.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt", **(metadata or {})})
        (tmp / "config.json").write_text(json.dumps(dict(hf_cfg), indent=2, default=str) + "\n", encoding="utf-8")
        if tokenizer_json:
            (tmp / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
    return out_dir


_SIDE_FILES = ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


def tokenizer_side_files(store: Any) -> dict[str, str]:
    """The files beside the weights that an exported copy of ``store`` should carry, in the
    layout transformers 5 saves: ``tokenizer_config.json``, ``special_tokens_map.json`` and
    ``generation_config.json`` as found (a GGUF's tokenizer config is made from its metadata),
    and the chat template in ``chat_template.jinja``, not inside ``tokenizer_config.json``."""
    from lminspect.weights.store import CHAT_TEMPLATE_FILE

    out: dict[str, str] = {}
    src = Path(str(getattr(store, "path", "")))
    folder = src if src.is_dir() else src.parent
    if getattr(store, "format", "") == "gguf":
        from lminspect.weights.gguf_format import tokenizer_config

        out["tokenizer_config.json"] = json.dumps(tokenizer_config(store.gguf), indent=2) + "\n"
    elif src.is_dir() or (folder / "tokenizer.json").is_file():
        for name in _SIDE_FILES:
            if (folder / name).is_file():
                out[name] = (folder / name).read_text(encoding="utf-8")
    chat = getattr(store, "chat_template", None)
    if "tokenizer_config.json" in out:
        try:
            tcfg = json.loads(out["tokenizer_config.json"])
        except ValueError:
            tcfg = None
        if isinstance(tcfg, dict) and "chat_template" in tcfg:
            del tcfg["chat_template"]  # as transformers 5 saves it: the template lives in its own file
            out["tokenizer_config.json"] = json.dumps(tcfg, indent=2, ensure_ascii=False) + "\n"
    if isinstance(chat, str) and chat:
        out[CHAT_TEMPLATE_FILE] = chat
    return out
