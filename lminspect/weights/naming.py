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

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Canon:
    """How to produce one canonical tensor from one stored tensor."""

    cname: str
    source: str  # the format's own name
    shape: tuple[int, ...]  # canonical shape, [out, in] for matrices
    transform: Transform | None = None


# ---------------------------------------------------------------- config helpers


_EXACT_TYPES = {"gemma": "gemma", "gemma2": "gemma2", "gemma3_text": "gemma3", "gemma3": "gemma3", "phi3": "phi3",
                "gpt_neox": "gptneox", "stablelm": "stablelm"}  # model_type -> family, before substrings


def detect_arch(config: dict[str, Any] | None, names: list[str] | None = None) -> str:
    """``llama | gpt2 | falcon | unknown`` from a HF config, else from tensor names."""
    cfg = config or {}
    if cfg.get("lminspect_arch"):
        return str(cfg["lminspect_arch"])
    mt = str(cfg.get("model_type") or "").lower()
    if mt in _EXACT_TYPES:
        return _EXACT_TYPES[mt]
    archs = " ".join(cfg.get("architectures") or []).lower()
    for key, arch in (
        ("llama", "llama"),
        ("mistral", "llama"),
        ("gpt2", "gpt2"),
        ("falcon", "falcon"),
        ("refinedweb", "falcon"),
        ("rwfor", "falcon"),
    ):
        if key in mt or key in archs:
            return arch
    names = names or []
    joined = "\n".join(names[:200])
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


@dataclass(frozen=True)
class NameTable:
    """One format's module names <-> canonical module names, as data, read in both directions.

    Reading (:meth:`to_canonical`) builds the weight store's canonical view; writing
    (:meth:`to_hf`) is HF export and GGUF conversion. A tensor name is a module name plus
    ``.weight`` / ``.bias``; ``{N}`` in ``block`` stands for the layer index.
    """

    top: dict[str, str]  # module outside the blocks -> canonical module
    block: str  # prefix of block N's modules
    layer: dict[str, str]  # module inside a block -> canonical module
    read_aliases: dict[str, str] = field(default_factory=dict)  # in-block spellings read, never written
    optional_prefix: str = ""  # omitted by some checkpoints when reading (GPT2Model's bare "wte")
    conv1d: frozenset[str] = frozenset()  # canonical in-block modules stored [in, out] (GPT-2 Conv1D)
    fused_qkv: str | None = None  # in-block module holding q, k and v (read as canonical "attn.qkv")
    fused_gate_up: str | None = None  # in-block module holding gate then up (Phi-3; read as "mlp.gate_up")
    nested: dict[str, str] = field(default_factory=dict)  # in-block module -> canonical, submodules kept

    _block_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        head, _, tail = self.block.partition("{N}")
        object.__setattr__(self, "_block_re", re.compile(re.escape(head) + r"(\d+)" + re.escape(tail) + r"(.+)"))

    def to_canonical(self, name: str) -> tuple[str, str] | None:
        """``(canonical module, kind)`` of a stored tensor name, or None when it has no canonical meaning.

        ``("layers.3.attn.o", "weight")``; the fused q/k/v module comes back as ``layers.N.attn.qkv``.
        """
        module, _, kind = name.rpartition(".")
        if kind not in ("weight", "bias"):
            return None
        tries = [module]
        if self.optional_prefix and not module.startswith(self.optional_prefix):
            tries.append(self.optional_prefix + module)
        for m in tries:
            if m in self.top:
                return self.top[m], kind
            hit = self._block_re.fullmatch(m)
            if hit:
                i, sub = hit.groups()
                if sub == self.fused_qkv:
                    return f"layers.{i}.attn.qkv", kind
                if sub == self.fused_gate_up:
                    return f"layers.{i}.mlp.gate_up", kind
                cmod = self.layer.get(sub) or self.read_aliases.get(sub)
                if cmod:
                    return f"layers.{i}.{cmod}", kind
                for hf, cm in self.nested.items():
                    if sub.startswith(hf + "."):
                        return f"layers.{i}.{cm}{sub[len(hf):]}", kind
        return None

    def to_hf(self, cname: str) -> str:
        """Canonical tensor name -> this format's name; ``KeyError`` when the format has no such module."""
        module, _, kind = cname.rpartition(".")
        for hf, cmod in self.top.items():
            if cmod == module:
                return f"{hf}.{kind}"
        m = re.fullmatch(r"layers\.(\d+)\.(.+)", module)
        if m:
            for hf, cmod in self.layer.items():
                if cmod == m[2]:
                    return f"{self.block.format(N=m[1])}{hf}.{kind}"
            for hf, cmod in self.nested.items():
                if m[2].startswith(cmod + "."):
                    return f"{self.block.format(N=m[1])}{hf}{m[2][len(cmod):]}.{kind}"
        raise KeyError(cname)


LLAMA_HF = NameTable(
    top={"model.embed_tokens": "embed.tokens", "model.norm": "norm", "lm_head": "head"},
    block="model.layers.{N}.",
    layer={
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn.q",
        "self_attn.k_proj": "attn.k",
        "self_attn.v_proj": "attn.v",
        "self_attn.o_proj": "attn.o",
        "post_attention_layernorm": "mlp_norm",
        "mlp.gate_proj": "mlp.gate",
        "mlp.up_proj": "mlp.up",
        "mlp.down_proj": "mlp.down",
    },
)

GGUF_LLAMA = NameTable(  # llama.cpp's names; attn_q / attn_k are also RoPE-permuted (build_canonical)
    top={"token_embd": "embed.tokens", "output_norm": "norm", "output": "head"},
    block="blk.{N}.",
    layer={
        "attn_norm": "attn_norm",
        "attn_q": "attn.q",
        "attn_k": "attn.k",
        "attn_v": "attn.v",
        "attn_output": "attn.o",
        "ffn_norm": "mlp_norm",
        "ffn_gate": "mlp.gate",
        "ffn_up": "mlp.up",
        "ffn_down": "mlp.down",
    },
)

GPT2_HF = NameTable(
    top={"transformer.wte": "embed.tokens", "transformer.wpe": "embed.positions", "transformer.ln_f": "norm",
         "lm_head": "head"},
    block="transformer.h.{N}.",
    layer={"ln_1": "attn_norm", "attn.c_proj": "attn.o", "ln_2": "mlp_norm", "mlp.c_fc": "mlp.up",
           "mlp.c_proj": "mlp.down"},
    optional_prefix="transformer.",
    conv1d=frozenset({"attn.o", "mlp.up", "mlp.down"}),
    fused_qkv="attn.c_attn",
)

FALCON_HF = NameTable(
    top={"transformer.word_embeddings": "embed.tokens", "transformer.ln_f": "norm", "lm_head": "head"},
    block="transformer.h.{N}.",
    layer={
        "input_layernorm": "attn_norm",
        "self_attention.dense": "attn.o",
        "post_attention_layernorm": "mlp_norm",
        "mlp.dense_h_to_4h": "mlp.up",
        "mlp.dense_4h_to_h": "mlp.down",
    },
    read_aliases={"ln_attn": "attn_norm", "ln_mlp": "mlp_norm"},  # new_decoder_architecture's two norms
    optional_prefix="transformer.",
    fused_qkv="self_attention.query_key_value",
)

GEMMA_HF = LLAMA_HF  # Gemma 1: Llama's names; the (1 + w) norms are the model's business

GEMMA2_HF = NameTable(  # Gemma 2/3: four norms per block (post_attention_layernorm is a post-norm here)
    top=LLAMA_HF.top,
    block="model.layers.{N}.",
    layer={**{k: v for k, v in LLAMA_HF.layer.items() if k != "post_attention_layernorm"},
           "post_attention_layernorm": "post_attn_norm", "pre_feedforward_layernorm": "mlp_norm",
           "post_feedforward_layernorm": "post_mlp_norm", "self_attn.q_norm": "attn.q_norm",
           "self_attn.k_norm": "attn.k_norm"},
)

PHI3_HF = NameTable(
    top=LLAMA_HF.top,
    block="model.layers.{N}.",
    layer={"input_layernorm": "attn_norm", "self_attn.o_proj": "attn.o", "post_attention_layernorm": "mlp_norm",
           "mlp.down_proj": "mlp.down"},
    fused_qkv="self_attn.qkv_proj",  # rows [q | k | v]
    fused_gate_up="mlp.gate_up_proj",  # rows [gate | up]
)

GPTNEOX_HF = NameTable(  # transformers 5 renames embed_out to lm_head when loading; both are read
    top={"gpt_neox.embed_in": "embed.tokens", "gpt_neox.final_layer_norm": "norm", "embed_out": "head",
         "lm_head": "head"},
    block="gpt_neox.layers.{N}.",
    layer={"input_layernorm": "attn_norm", "attention.dense": "attn.o", "post_attention_layernorm": "mlp_norm",
           "mlp.dense_h_to_4h": "mlp.up", "mlp.dense_4h_to_h": "mlp.down"},
    fused_qkv="attention.query_key_value",  # rows [n_head, 3, head_dim], as Falcon-RW
)

STABLELM_HF = NameTable(
    top=LLAMA_HF.top,
    block="model.layers.{N}.",
    layer=LLAMA_HF.layer,
    nested={"self_attn.q_layernorm": "attn.q_norm", "self_attn.k_layernorm": "attn.k_norm"},  # norms.{h}
)

HF_TABLES: dict[str, NameTable] = {"llama": LLAMA_HF, "gpt2": GPT2_HF, "falcon": FALCON_HF, "gemma": GEMMA_HF,
                                   "gemma2": GEMMA2_HF, "gemma3": GEMMA2_HF, "phi3": PHI3_HF,
                                   "gptneox": GPTNEOX_HF, "stablelm": STABLELM_HF}

CANONICAL_RE = re.compile(
    r"(embed\.(tokens|positions)|layers\.\d+\.(attn_norm|mlp_norm|post_attn_norm|post_mlp_norm"
    r"|attn\.([qkvo]|v_norm|[qk]_norm(\.norms\.\d+)?)|mlp\.(gate|up|down))"
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

        def part(sl: slice) -> Transform:
            return lambda a: a.reshape(nkv, g + 2, hd, *rest)[:, sl].reshape(-1, *rest)

        return [("q", part(slice(0, g)), (nkv * g * hd, *rest)),
                ("k", part(slice(g, g + 1)), (nkv * hd, *rest)),
                ("v", part(slice(g + 1, g + 2)), (nkv * hd, *rest))]
    if config.get("multi_query"):
        hd = out // (nh + 2)
        return [("q", lambda a: a[: nh * hd], (nh * hd, *rest)),
                ("k", lambda a: a[nh * hd : (nh + 1) * hd], (hd, *rest)),
                ("v", lambda a: a[(nh + 1) * hd :], (hd, *rest))]
    hd = out // (3 * nh)

    def rw(i: int) -> Transform:
        return lambda a: a.reshape(nh, 3, hd, *rest)[:, i].reshape(nh * hd, *rest)

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
    gguf = fmt == "gguf" and arch == "llama"
    table = GGUF_LLAMA if gguf else HF_TABLES.get(arch)
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
        cname = f"{cmod}.{kind}"
        if gguf:
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
