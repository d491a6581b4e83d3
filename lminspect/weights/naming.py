"""Architecture-aware names: each format's own tensor names -> the canonical names.

The canonical names (docs/ARCHITECTURE.md) are the contract between the weight store,
the model modules, training and export. A canonical tensor is always float32-ready
numpy in torch ``nn.Linear`` orientation ``[out, in]``; getting there may need a
transform of the stored tensor:

- GPT-2 stores ``Conv1D`` weights as ``[in, out]``: transpose.
- GPT-2 ``c_attn`` and Falcon ``query_key_value`` fuse q, k, v: split (Falcon-RW
  interleaves per head: the fused output dim is ``[n_head, 3, head_dim]``, exactly as
  ``FalconAttention._split_heads`` views it).
- GGUF llama ``attn_q``/``attn_k`` are stored RoPE-permuted (llama.cpp's converter
  interleaves the two rotary halves per head): un-permute back to HF's half-split.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lminspect.weights.families import (  # noqa: F401 - the tables are re-exported here
    FALCON_HF,
    GGUF_LLAMA,
    GPT2_HF,
    LLAMA_HF,
    SPECS,
    family_of,
    spec_named,
)
from lminspect.weights.nametable import NameTable

Transform = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Canon:
    """How to produce one canonical tensor from one stored tensor."""

    cname: str
    source: str  # the format's own name
    shape: tuple[int, ...]  # canonical shape, [out, in] for matrices
    transform: Transform | None = None


# ---------------------------------------------------------------- config helpers


def detect_arch(config: dict[str, Any] | None, names: list[str] | None = None) -> str:
    """The family name a HF config describes (weights/families.py), ``unknown`` when it names none
    lminspect knows. Only a store with no config at all falls back to tensor names, and only to
    pick a name table for browsing: ``load_model`` still needs the family from a config."""
    cfg = config or {}
    spec = family_of(cfg)
    if spec is not None:
        return spec.name
    if cfg.get("model_type") or cfg.get("architectures") or cfg.get("lminspect_arch"):
        return "unknown"
    joined = "\n".join((names or [])[:200])
    if "self_attn.q_proj" in joined or "blk.0.attn_q" in joined:
        return "llama"
    if "attn.c_attn" in joined:
        return "gpt2"
    if "self_attention.query_key_value" in joined:
        return "falcon"
    return "unknown"


def _first_int(config: dict[str, Any], *keys: str) -> int | None:
    """The first of ``keys`` the config sets (families name the same field differently)."""
    for k in keys:
        if config.get(k):
            return int(config[k])
    return None


def n_layers(config: dict[str, Any]) -> int | None:
    return _first_int(config, "num_hidden_layers", "n_layer", "num_layers")


def n_heads(config: dict[str, Any]) -> int | None:
    return _first_int(config, "num_attention_heads", "n_head", "num_heads")


def n_kv_heads(config: dict[str, Any]) -> int | None:
    kv = _first_int(config, "num_key_value_heads", "num_kv_heads", "n_head_kv")
    if kv is not None:
        return kv
    return 1 if config.get("multi_query") else n_heads(config)


def hidden_size(config: dict[str, Any]) -> int | None:
    return _first_int(config, "hidden_size", "n_embd", "d_model")


def head_dim(config: dict[str, Any]) -> int | None:
    if config.get("head_dim"):
        return int(config["head_dim"])
    h, d = n_heads(config), hidden_size(config)
    return d // h if h and d else None


# ---------------------------------------------------------------- transforms


def _T(a: np.ndarray) -> np.ndarray:
    return a.T if a.ndim == 2 else a


def unpermute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp ``convert_hf_to_gguf`` ``permute`` (interleaved -> half-split)."""
    out = w.shape[0]
    rest = w.shape[1:]
    return w.reshape(n_head, out // n_head // 2, 2, *rest).swapaxes(1, 2).reshape(w.shape)


def permute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``permute`` (half-split -> interleaved), for writing GGUF and tests."""
    out = w.shape[0]
    rest = w.shape[1:]
    return w.reshape(n_head, 2, out // n_head // 2, *rest).swapaxes(1, 2).reshape(w.shape)


# ---------------------------------------------------------------- name tables


# HF tensor names per family (every family's own table, from weights/families.py)
HF_TABLES: dict[str, NameTable] = {s.name: s.hf_names for s in SPECS if s.hf_names is not None}

CANONICAL_RE = re.compile(
    r"(embed\.(tokens|positions)|layers\.\d+\.(attn_norm|mlp_norm|attn_post_norm|mlp_post_norm"
    r"|attn\.([qkvo]|[vqk]_norm|[qk]_norm\.norms\.\d+)|mlp\.(gate|up|down))"
    r"|norm|head)\.(weight|bias)"
)


def _falcon_qkv(shape: tuple[int, ...], config: dict[str, Any]) -> list[tuple[str, Transform, tuple]]:
    """Split Falcon's fused qkv output rows for its three layouts (see _split_heads)."""
    nh = n_heads(config) or 1
    out = shape[0]
    rest = shape[1:]
    if config.get("new_decoder_architecture"):
        nkv = int(config.get("num_kv_heads") or nh)
        g = nh // nkv
        hd = out // (nkv * (g + 2))

        def part(sl: slice) -> Transform:  # a's own trailing shape: stored.row_map probes with [rows, 1]
            return lambda a: a.reshape(nkv, g + 2, hd, *a.shape[1:])[:, sl].reshape(-1, *a.shape[1:])

        return [("q", part(slice(0, g)), (nkv * g * hd, *rest)),
                ("k", part(slice(g, g + 1)), (nkv * hd, *rest)),
                ("v", part(slice(g + 1, g + 2)), (nkv * hd, *rest))]
    if config.get("multi_query"):
        hd = out // (nh + 2)
        return [("q", lambda a: a[: nh * hd], (nh * hd, *rest)),
                ("k", lambda a: a[nh * hd : (nh + 1) * hd], (hd, *rest)),
                ("v", lambda a: a[(nh + 1) * hd :], (hd, *rest))]
    hd = out // (3 * nh)

    def rw(i: int) -> Transform:  # (a row selection: the stored form keeps it as a row map, no copy)
        return lambda a: a.reshape(nh, 3, hd, *a.shape[1:])[:, i].reshape(nh * hd, *a.shape[1:])

    return [(p, rw(i), (nh * hd, *rest)) for i, p in enumerate("qkv")]


def _gguf_rope_fn(cname: str, config: dict[str, Any]) -> Transform | None:
    """GGUF llama q/k rows are RoPE-permuted per head: the un-permute for this tensor, if any."""
    if cname.endswith(("attn.q.weight", "attn.q.bias")):
        nh = n_heads(config)
    elif cname.endswith(("attn.k.weight", "attn.k.bias")):
        nh = n_kv_heads(config)
    else:
        return None
    return (lambda a, nh=nh: unpermute_rope(a, nh)) if nh else None


def _split_rows(sizes: list[tuple[str, int]], shape: tuple[int, ...]) -> list[tuple[str, Transform, tuple]]:
    """Consecutive row blocks of a fused tensor (Phi-3's ``qkv_proj`` and ``gate_up_proj``)."""
    out, at = [], 0
    for p, n in sizes:
        out.append((p, lambda a, lo=at, hi=at + n: a[lo:hi], (n, *shape[1:])))
        at += n
    return out


def _fused_parts(arch: str, cmod: str, kind: str, shape: tuple[int, ...], config: dict[str, Any]):
    """How one fused stored tensor splits into canonical ones: ``[(part, transform, shape)]``."""
    layer = cmod.split(".")[1]
    if cmod.endswith(".mlp.gate_up"):
        return [(f"mlp.{p}", fn, shp) for p, fn, shp in _split_rows([("gate", shape[0] // 2), ("up", shape[0] // 2)],
                                                                      shape)]
    if arch == "gpt2":
        parts = _gpt2_qkv(layer, kind, shape)
    elif arch == "phi3":
        nh, hd = n_heads(config) or 1, head_dim(config) or 1
        nkv = n_kv_heads(config) or nh
        parts = _split_rows([("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)], shape)
    else:  # falcon, and GPT-NeoX (always Falcon-RW's per-head interleave)
        parts = _falcon_qkv(shape, config if arch == "falcon" else {"num_attention_heads": n_heads(config)})
    return [(f"attn.{p}", fn, shp) for p, fn, shp in parts]


def _gpt2_qkv(layer: str, kind: str, shape: tuple[int, ...]) -> list[tuple[str, Transform, tuple]]:
    """Split GPT-2's Conv1D ``c_attn`` ([in, 3*out] weight, [3*out] bias) into q, k, v."""
    is_w = kind == "weight" and len(shape) == 2
    d = (shape[1] if is_w else shape[0]) // 3
    if is_w:
        return [(p, lambda a, i=i: a[:, i * d : (i + 1) * d].T, (d, shape[0])) for i, p in enumerate("qkv")]
    return [(p, lambda a, i=i: a[i * d : (i + 1) * d], (d,)) for i, p in enumerate("qkv")]


def build_canonical(
    arch: str, fmt: str, shapes: dict[str, tuple[int, ...]], config: dict[str, Any]
) -> dict[str, Canon]:
    """Map every stored tensor that has a canonical meaning to its canonical name(s)."""
    out: dict[str, Canon] = {}
    spec = spec_named(arch)
    gguf = fmt == "gguf"
    table = (spec.gguf_names if gguf else spec.hf_names) if spec is not None else None
    permuted = gguf and spec is not None and spec.gguf_rope_permuted
    for name, shape in shapes.items():
        if not gguf and CANONICAL_RE.fullmatch(name):  # written by lminspect itself
            out[name] = Canon(name, name, tuple(shape))
            continue
        hit = table.to_canonical(name) if table else None
        if hit is None:
            continue
        cmod, kind = hit
        if cmod.endswith((".attn.qkv", ".mlp.gate_up")):
            layer = cmod.split(".")[1]
            for p, fn, shp in _fused_parts(arch, cmod, kind, tuple(shape), config):
                cname = f"layers.{layer}.{p}.{kind}"
                out[cname] = Canon(cname, name, tuple(shp), fn)
            continue
        if gguf and cmod.endswith((".attn.q_norm", ".attn.k_norm")) and arch == "stablelm" and len(shape) == 2:
            for h in range(shape[0]):  # llama.cpp stacks StableLM's per-head LayerNorms: one row each
                cname = f"{cmod}.norms.{h}.{kind}"
                out[cname] = Canon(cname, name, (shape[1],), lambda a, h=h: a[h])
            continue
        cname = f"{cmod}.{kind}"
        if permuted:
            out[cname] = Canon(cname, name, tuple(shape), _gguf_rope_fn(cname, config))
        elif cmod.split(".", 2)[-1] in table.conv1d and len(shape) == 2:
            out[cname] = Canon(cname, name, (shape[1], shape[0]), _T)
        else:
            out[cname] = Canon(cname, name, tuple(shape))
    return out


def resolve_lookup(name: str, raw: set[str] | dict, canon: dict[str, Canon]) -> tuple[str, str]:
    """Classify a user lookup: ("raw", name) or ("canon", cname); ``.weight`` may be omitted."""
    if name in raw:
        return "raw", name
    if name in canon:
        return "canon", name
    if name + ".weight" in raw:
        return "raw", name + ".weight"
    if name + ".weight" in canon:
        return "canon", name + ".weight"
    raise KeyError(name)


def build_tree(raw_names: list[str], canon: dict[str, Canon]) -> dict[str, Any]:
    """Group canonical names for browsing: embeddings / layers / N / attn|mlp|norms / norms / head.

    Stored tensors with no canonical meaning go under ``other`` by their own name.
    """
    tree: dict[str, Any] = {"embeddings": [], "layers": {}, "norms": [], "head": [], "other": []}
    used: set[str] = set()
    for cname, c in canon.items():
        used.add(c.source)
        parts = cname.split(".")
        if parts[0] == "embed":
            tree["embeddings"].append(cname)
        elif parts[0] == "layers":
            layer = tree["layers"].setdefault(int(parts[1]), {"attn": [], "mlp": [], "norms": []})
            if parts[2] == "attn":
                layer["attn"].append(cname)
            elif parts[2] == "mlp":
                layer["mlp"].append(cname)
            else:
                layer["norms"].append(cname)
        elif parts[0] == "norm":
            tree["norms"].append(cname)
        elif parts[0] == "head":
            tree["head"].append(cname)
    tree["other"] = [n for n in raw_names if n not in used]
    tree["layers"] = dict(sorted(tree["layers"].items()))
    order = {"q": 0, "k": 1, "v": 2, "o": 3, "gate": 4, "up": 5, "down": 6}
    for layer in tree["layers"].values():
        for k in ("attn", "mlp"):
            layer[k].sort(key=lambda c: (order.get(c.split(".")[3], 9), c))
    return tree


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders numbers by value: ``layers.2`` before ``layers.10`` (a plain string
    sort puts 10, 11, ... between 1 and 2)."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name) if p)


def glob_matches(patterns: Sequence[str], *names: str | None) -> bool:
    """Whether any of a tensor's names (stored, canonical) matches any glob. ``.weight`` is
    optional, so ``layers.*.mlp.down`` finds ``layers.3.mlp.down.weight`` (the CLI, the REPL,
    diff and timeline all select tensors through here and agree on what a glob means)."""
    for n in names:
        if n and any(fnmatch.fnmatchcase(n, g) or fnmatch.fnmatchcase(n.removesuffix(".weight"), g)
                     for g in patterns):
            return True
    return False


def select_tensors(store: Any, patterns: Sequence[str] | None, *, canonical: bool = False) -> list[str]:
    """The tensors of ``store`` matching any glob (all without ``patterns``), layers in number
    order (0, 1, 2, ..., 10; a file's order is often 0, 1, 10, 11, ...). ``canonical``: canonical
    names (GPT-2's split q/k/v), plus stored tensors without one; else the stored names."""
    if canonical:
        other = {n: store.canonical_source(n) for n in store.canonical_names()}  # canonical -> stored
        covered = set(other.values())
        other.update({n: None for n in store.keys() if n not in covered})
        names = list(other)
        key = {n: n for n in names}
    else:
        names = list(store.keys())
        other = {n: store.info(n).canonical for n in names}
        key = {n: other[n] or n for n in names}
    if patterns:
        names = [n for n in names if glob_matches(patterns, n, other[n])]
    return sorted(names, key=lambda n: natural_key(key[n]))
