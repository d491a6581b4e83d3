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
from dataclasses import dataclass
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


def detect_arch(config: dict[str, Any] | None, names: list[str] | None = None) -> str:
    """``llama | gpt2 | falcon | unknown`` from a HF config, else from tensor names."""
    cfg = config or {}
    if cfg.get("lminspect_arch"):
        return str(cfg["lminspect_arch"])
    mt = str(cfg.get("model_type") or "").lower()
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


def _rows(a: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return a[lo:hi]


# ---------------------------------------------------------------- tables

LLAMA_HF = [
    (r"model\.embed_tokens\.(weight)", "embed.tokens.{0}"),
    (r"model\.layers\.(\d+)\.input_layernorm\.(weight|bias)", "layers.{0}.attn_norm.{1}"),
    (r"model\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.(weight|bias)", "layers.{0}.attn.{1}.{2}"),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.(weight|bias)", "layers.{0}.mlp_norm.{1}"),
    (r"model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.(weight|bias)", "layers.{0}.mlp.{1}.{2}"),
    (r"model\.norm\.(weight|bias)", "norm.{0}"),
    (r"lm_head\.(weight)", "head.{0}"),
]

GGUF_LLAMA = [
    (r"token_embd\.(weight)", "embed.tokens.{0}"),
    (r"blk\.(\d+)\.attn_norm\.(weight|bias)", "layers.{0}.attn_norm.{1}"),
    (r"blk\.(\d+)\.attn_q\.(weight|bias)", "layers.{0}.attn.q.{1}"),
    (r"blk\.(\d+)\.attn_k\.(weight|bias)", "layers.{0}.attn.k.{1}"),
    (r"blk\.(\d+)\.attn_v\.(weight|bias)", "layers.{0}.attn.v.{1}"),
    (r"blk\.(\d+)\.attn_output\.(weight|bias)", "layers.{0}.attn.o.{1}"),
    (r"blk\.(\d+)\.ffn_norm\.(weight|bias)", "layers.{0}.mlp_norm.{1}"),
    (r"blk\.(\d+)\.ffn_gate\.(weight|bias)", "layers.{0}.mlp.gate.{1}"),
    (r"blk\.(\d+)\.ffn_up\.(weight|bias)", "layers.{0}.mlp.up.{1}"),
    (r"blk\.(\d+)\.ffn_down\.(weight|bias)", "layers.{0}.mlp.down.{1}"),
    (r"output_norm\.(weight|bias)", "norm.{0}"),
    (r"output\.(weight)", "head.{0}"),
]

_P = r"(?:transformer\.)?"
GPT2_HF = [  # (pattern, canonical, transpose?)
    (_P + r"wte\.(weight)", "embed.tokens.{0}", False),
    (_P + r"wpe\.(weight)", "embed.positions.{0}", False),
    (_P + r"h\.(\d+)\.ln_1\.(weight|bias)", "layers.{0}.attn_norm.{1}", False),
    (_P + r"h\.(\d+)\.attn\.c_proj\.(weight|bias)", "layers.{0}.attn.o.{1}", True),
    (_P + r"h\.(\d+)\.ln_2\.(weight|bias)", "layers.{0}.mlp_norm.{1}", False),
    (_P + r"h\.(\d+)\.mlp\.c_fc\.(weight|bias)", "layers.{0}.mlp.up.{1}", True),
    (_P + r"h\.(\d+)\.mlp\.c_proj\.(weight|bias)", "layers.{0}.mlp.down.{1}", True),
    (_P + r"ln_f\.(weight|bias)", "norm.{0}", False),
    (r"lm_head\.(weight)", "head.{0}", False),
]
GPT2_QKV = re.compile(_P + r"h\.(\d+)\.attn\.c_attn\.(weight|bias)")

FALCON_HF = [
    (_P + r"word_embeddings\.(weight)", "embed.tokens.{0}"),
    (_P + r"h\.(\d+)\.(?:input_layernorm|ln_attn)\.(weight|bias)", "layers.{0}.attn_norm.{1}"),
    (_P + r"h\.(\d+)\.self_attention\.dense\.(weight|bias)", "layers.{0}.attn.o.{1}"),
    (_P + r"h\.(\d+)\.(?:post_attention_layernorm|ln_mlp)\.(weight|bias)", "layers.{0}.mlp_norm.{1}"),
    (_P + r"h\.(\d+)\.mlp\.dense_h_to_4h\.(weight|bias)", "layers.{0}.mlp.up.{1}"),
    (_P + r"h\.(\d+)\.mlp\.dense_4h_to_h\.(weight|bias)", "layers.{0}.mlp.down.{1}"),
    (_P + r"ln_f\.(weight|bias)", "norm.{0}"),
    (r"lm_head\.(weight)", "head.{0}"),
]
FALCON_QKV = re.compile(_P + r"h\.(\d+)\.self_attention\.query_key_value\.(weight|bias)")

CANONICAL_RE = re.compile(
    r"(embed\.(tokens|positions)|layers\.\d+\.(attn_norm|mlp_norm|attn\.([qkvo]|v_norm)|mlp\.(gate|up|down))"
    r"|norm|head)\.(weight|bias)"
)


def _compile(table):
    return [(re.compile(t[0]), *t[1:]) for t in table]


_LLAMA_HF = _compile(LLAMA_HF)
_GGUF_LLAMA = _compile(GGUF_LLAMA)
_GPT2_HF = _compile(GPT2_HF)
_FALCON_HF = _compile(FALCON_HF)


def _split(shape: tuple[int, ...], pieces: list[tuple[str, Transform, int]]) -> list[tuple[str, Transform, tuple]]:
    return [(part, fn, (rows, *shape[1:])) for part, fn, rows in pieces]


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


def build_canonical(
    arch: str, fmt: str, shapes: dict[str, tuple[int, ...]], config: dict[str, Any]
) -> dict[str, Canon]:
    """Map every stored tensor that has a canonical meaning to its canonical name(s)."""
    out: dict[str, Canon] = {}

    def add(cname: str, src: str, shape: tuple[int, ...], fn: Transform | None = None) -> None:
        out[cname] = Canon(cname, src, tuple(shape), fn)

    for name, shape in shapes.items():
        if fmt == "gguf" and arch == "llama":
            for rx, tmpl in _GGUF_LLAMA:
                m = rx.fullmatch(name)
                if m:
                    cname = tmpl.format(*m.groups())
                    fn = None
                    if cname.endswith(("attn.q.weight", "attn.q.bias")):
                        nh = n_heads(config)
                        fn = (lambda a, nh=nh: unpermute_rope(a, nh)) if nh else None
                    elif cname.endswith(("attn.k.weight", "attn.k.bias")):
                        nk = n_kv_heads(config)
                        fn = (lambda a, nk=nk: unpermute_rope(a, nk)) if nk else None
                    add(cname, name, shape, fn)
                    break
            continue
        if CANONICAL_RE.fullmatch(name):
            add(name, name, shape)
            continue
        if arch == "llama":
            for rx, tmpl in _LLAMA_HF:
                m = rx.fullmatch(name)
                if m:
                    add(tmpl.format(*m.groups()), name, shape)
                    break
        elif arch == "gpt2":
            m = GPT2_QKV.fullmatch(name)
            if m:
                layer, kind = m.groups()
                is_w = kind == "weight" and len(shape) == 2
                total = shape[1] if is_w else shape[0]
                d = total // 3
                for i, p in enumerate("qkv"):
                    if is_w:
                        fn = lambda a, i=i, d=d: a[:, i * d : (i + 1) * d].T  # noqa: E731
                        add(f"layers.{layer}.attn.{p}.{kind}", name, (d, shape[0]), fn)
                    else:
                        fn = lambda a, i=i, d=d: a[i * d : (i + 1) * d]  # noqa: E731
                        add(f"layers.{layer}.attn.{p}.{kind}", name, (d,), fn)
                continue
            for rx, tmpl, transpose in _GPT2_HF:
                m = rx.fullmatch(name)
                if m:
                    if transpose and len(shape) == 2:
                        add(tmpl.format(*m.groups()), name, (shape[1], shape[0]), _T)
                    else:
                        add(tmpl.format(*m.groups()), name, shape)
                    break
        elif arch == "falcon":
            m = FALCON_QKV.fullmatch(name)
            if m:
                layer, kind = m.groups()
                for p, fn, shp in _falcon_qkv(shape, config):
                    add(f"layers.{layer}.attn.{p}.{kind}", name, shp, fn)
                continue
            for rx, tmpl in _FALCON_HF:
                m = rx.fullmatch(name)
                if m:
                    add(tmpl.format(*m.groups()), name, shape)
                    break
    return out


_CANON_TO_LLAMA = [
    (re.compile(r"embed\.tokens\.(weight)"), "model.embed_tokens.{0}"),
    (re.compile(r"layers\.(\d+)\.attn_norm\.(weight|bias)"), "model.layers.{0}.input_layernorm.{1}"),
    (re.compile(r"layers\.(\d+)\.attn\.([qkvo])\.(weight|bias)"), "model.layers.{0}.self_attn.{1}_proj.{2}"),
    (re.compile(r"layers\.(\d+)\.mlp_norm\.(weight|bias)"), "model.layers.{0}.post_attention_layernorm.{1}"),
    (re.compile(r"layers\.(\d+)\.mlp\.(gate|up|down)\.(weight|bias)"), "model.layers.{0}.mlp.{1}_proj.{2}"),
    (re.compile(r"norm\.(weight|bias)"), "model.norm.{0}"),
    (re.compile(r"head\.(weight)"), "lm_head.{0}"),
]


def canonical_to_hf_llama(cname: str) -> str:
    """Canonical name -> HF ``LlamaForCausalLM`` state-dict name (used by convert)."""
    for rx, tmpl in _CANON_TO_LLAMA:
        m = rx.fullmatch(cname)
        if m:
            return tmpl.format(*m.groups())
    raise KeyError(cname)


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
