"""Test helpers for the engine tests: a minimal stand-in TensorStore over a HF save_pretrained dir.

It maps HF names to the canonical names itself, so the engine's parity tests do not depend on
the weight store; ``store_for`` prefers the real ``lminspect.weights.open_store`` when present.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

_LLAMA = [
    (r"(model\.)?embed_tokens\.", "embed.tokens."),
    (r"(model\.)?layers\.(\d+)\.input_layernorm\.", r"layers.\2.attn_norm."),
    (r"(model\.)?layers\.(\d+)\.post_attention_layernorm\.", r"layers.\2.mlp_norm."),
    (r"(model\.)?layers\.(\d+)\.self_attn\.([qkvo])_proj\.", r"layers.\2.attn.\3."),
    (r"(model\.)?layers\.(\d+)\.mlp\.(gate|up|down)_proj\.", r"layers.\2.mlp.\3."),
    (r"(model\.)?norm\.", "norm."),
    (r"lm_head\.", "head."),
]


class HFDirStore:
    """Just enough of TensorStore for load_model: config, arch, get_canonical, tokenizer_json."""

    def __init__(self, path: Path) -> None:
        from safetensors.numpy import load_file

        self.path = Path(path)
        self.name = self.path.name
        self.config = json.loads((self.path / "config.json").read_text())
        self.arch = self.config["model_type"]
        raw = load_file(str(self.path / "model.safetensors"))
        self.tensors: dict[str, np.ndarray] = {}
        getattr(self, f"_map_{self.arch}")(raw)
        self.chat_template = None

    def _map_llama(self, raw: dict) -> None:
        for k, v in raw.items():
            for pat, rep in _LLAMA:
                if re.match(pat, k):
                    self.tensors[re.sub(pat, rep, k, count=1)] = v
                    break

    def _map_gpt2(self, raw: dict) -> None:
        d = self.config["n_embd"]
        for k, v in raw.items():
            k = k.removeprefix("transformer.")
            if k.startswith("wte."):
                self.tensors["embed.tokens.weight"] = v
            elif k.startswith("wpe."):
                self.tensors["embed.positions.weight"] = v
            elif k.startswith("ln_f."):
                self.tensors["norm." + k.split(".")[-1]] = v
            elif k.startswith("h."):
                _, n, *rest = k.split(".")
                sub, kind = ".".join(rest[:-1]), rest[-1]
                p = f"layers.{n}."
                w = v.T.copy() if kind == "weight" and v.ndim == 2 else v
                if sub == "ln_1":
                    self.tensors[p + "attn_norm." + kind] = v
                elif sub == "ln_2":
                    self.tensors[p + "mlp_norm." + kind] = v
                elif sub == "attn.c_attn":
                    for i, name in enumerate("qkv"):
                        self.tensors[p + f"attn.{name}.{kind}"] = np.ascontiguousarray(w[i * d:(i + 1) * d])
                elif sub == "attn.c_proj":
                    self.tensors[p + "attn.o." + kind] = w
                elif sub == "mlp.c_fc":
                    self.tensors[p + "mlp.up." + kind] = w
                elif sub == "mlp.c_proj":
                    self.tensors[p + "mlp.down." + kind] = w

    def _map_falcon(self, raw: dict) -> None:
        H = self.config["num_attention_heads"]
        for k, v in raw.items():
            k = k.removeprefix("transformer.")
            if k.startswith("word_embeddings."):
                self.tensors["embed.tokens.weight"] = v
            elif k.startswith("ln_f."):
                self.tensors["norm." + k.split(".")[-1]] = v
            elif k.startswith("lm_head."):
                self.tensors["head.weight"] = v
            elif k.startswith("h."):
                _, n, *rest = k.split(".")
                sub, kind = ".".join(rest[:-1]), rest[-1]
                p = f"layers.{n}."
                if sub == "input_layernorm":
                    self.tensors[p + "attn_norm." + kind] = v
                elif sub == "post_attention_layernorm":
                    self.tensors[p + "mlp_norm." + kind] = v
                elif sub == "self_attention.query_key_value" and self.config.get("multi_query"):
                    hd = self.config["hidden_size"] // H
                    vv = v.reshape(H + 2, hd, *v.shape[1:])
                    self.tensors[p + "attn.q." + kind] = np.ascontiguousarray(vv[:H].reshape(H * hd, *v.shape[1:]))
                    self.tensors[p + "attn.k." + kind] = np.ascontiguousarray(vv[H])
                    self.tensors[p + "attn.v." + kind] = np.ascontiguousarray(vv[H + 1])
                elif sub == "self_attention.query_key_value":
                    hd = v.shape[0] // (3 * H)
                    vv = v.reshape(H, 3, hd, *v.shape[1:])
                    for i, name in enumerate("qkv"):
                        self.tensors[p + f"attn.{name}.{kind}"] = np.ascontiguousarray(
                            vv[:, i].reshape(H * hd, *v.shape[1:]))
                elif sub == "self_attention.dense":
                    self.tensors[p + "attn.o." + kind] = v
                elif sub == "mlp.dense_h_to_4h":
                    self.tensors[p + "mlp.up." + kind] = v
                elif sub == "mlp.dense_4h_to_h":
                    self.tensors[p + "mlp.down." + kind] = v

    def canonical_names(self) -> list[str]:
        return list(self.tensors)

    def get_canonical(self, name: str) -> np.ndarray:
        if not name.endswith((".weight", ".bias")):
            name += ".weight"
        return self.tensors[name]

    def tokenizer_json(self) -> str | None:
        p = self.path / "tokenizer.json"
        return p.read_text() if p.exists() else None


def store_for(path: Path):
    """The real weight store when it exists, else the stand-in above."""
    try:
        from lminspect.weights import open_store
    except ImportError:
        return HFDirStore(path)
    return open_store(path)


def hf_model(path: Path):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
