"""Model files of a given shape, built here: no 7B checkpoint can be downloaded on this machine.

``write_bf16_dir`` writes a Llama HF directory (config.json, tokenizer.json, one bf16
model.safetensors); ``write_kquant_gguf`` a llama GGUF whose matrices are K-quant blocks mixed
as llama.cpp's Q4_K_M does (Q4_K, Q6_K for attn_v / ffn_down in every other layer and for the
head, float32 norms). ``fill="zeros"`` makes the tensor data a sparse hole (no disk, but real
memory and time when read); ``fill="random"`` writes random values (small shapes: tests), K-quant
blocks with sane float16 scales. Used by benchmarks/bench_big.py and tests/test_models_bigweights.py.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

# Llama-2-7B's shape
LLAMA_7B = {"vocab": 32000, "dim": 4096, "layers": 32, "heads": 32, "kv_heads": 32, "ffn": 11008, "context": 4096}
BOS, EOS = 257, 256  # all-zero weights make every logit 0: greedy picks id 0, never EOS

_BLOCK = {"Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210), "Q8_0": (32, 34),
          "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24)}
_SCALE_AT = {"Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,), "Q8_0": (0,), "Q4_0": (0,), "Q4_1": (0, 2),
             "Q5_0": (0,), "Q5_1": (0, 2)}  # byte offsets of a block's float16 scale / min


def shape(**over: Any) -> dict[str, int]:
    """LLAMA_7B with some sizes replaced (``layers=2`` for a quick run)."""
    return {**LLAMA_7B, **over}


def hf_config(s: dict[str, int]) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": s["vocab"],
        "hidden_size": s["dim"], "intermediate_size": s["ffn"], "num_hidden_layers": s["layers"],
        "num_attention_heads": s["heads"], "num_key_value_heads": s["kv_heads"],
        "max_position_embeddings": s["context"], "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "hidden_act": "silu", "bos_token_id": BOS, "eos_token_id": EOS,
        "torch_dtype": "bfloat16",
    }


def _tensors(s: dict[str, int]) -> list[tuple[str, str, tuple[int, ...]]]:
    """(HF name, GGUF name, shape) of every tensor, in file order."""
    d, f, hd = s["dim"], s["ffn"], s["dim"] // s["heads"]
    kv = s["kv_heads"] * hd
    out = [("model.embed_tokens.weight", "token_embd.weight", (s["vocab"], d))]
    for i in range(s["layers"]):
        hf, gg = f"model.layers.{i}.", f"blk.{i}."
        out += [(hf + "input_layernorm.weight", gg + "attn_norm.weight", (d,)),
                (hf + "self_attn.q_proj.weight", gg + "attn_q.weight", (d, d)),
                (hf + "self_attn.k_proj.weight", gg + "attn_k.weight", (kv, d)),
                (hf + "self_attn.v_proj.weight", gg + "attn_v.weight", (kv, d)),
                (hf + "self_attn.o_proj.weight", gg + "attn_output.weight", (d, d)),
                (hf + "post_attention_layernorm.weight", gg + "ffn_norm.weight", (d,)),
                (hf + "mlp.gate_proj.weight", gg + "ffn_gate.weight", (f, d)),
                (hf + "mlp.up_proj.weight", gg + "ffn_up.weight", (f, d)),
                (hf + "mlp.down_proj.weight", gg + "ffn_down.weight", (d, f))]
    out += [("model.norm.weight", "output_norm.weight", (d,)), ("lm_head.weight", "output.weight", (s["vocab"], d))]
    return out


def q4_k_m_kind(gguf_name: str, shape_: tuple[int, ...]) -> str:
    """The type llama.cpp's Q4_K_M gives a tensor (its 'use more bits' layers simplified to every other)."""
    if len(shape_) == 1:
        return "F32"
    if gguf_name == "output.weight":
        return "Q6_K"
    if gguf_name.endswith(("attn_v.weight", "ffn_down.weight")) and int(gguf_name.split(".")[1]) % 2 == 0:
        return "Q6_K"
    return "Q4_K"


def write_tokenizer(out: Path) -> None:
    """A byte-level tokenizer.json with no merges (ids 0..255 bytes, 256 EOS, 257 BOS)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True), AddedToken("<s>", special=True)])
    tok.save(str(out / "tokenizer.json"))


def _random(rng: np.random.Generator, name: str, shp: tuple[int, ...]) -> np.ndarray:
    if len(shp) == 1:
        return (1.0 + 0.1 * rng.standard_normal(shp)).astype(np.float32)
    return (0.05 * rng.standard_normal(shp)).astype(np.float32)


def _bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, rounded to nearest even (as torch rounds)."""
    u = a.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def _write_bf16_safetensors(path: Path, tensors: list[tuple[str, tuple[int, ...]]], fill: str, seed: int) -> None:
    """One bfloat16 safetensors file of ``tensors`` (name, shape): a sparse hole of zeros, or random
    values (norm weights around 1, biases around 0)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, shp in tensors:
        n = 2 * int(np.prod(shp))
        header[name] = {"dtype": "BF16", "shape": list(shp), "data_offsets": [off, off + n]}
        off += n
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-(len(hb) + 8) % 8)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb)
        if fill == "zeros":
            f.truncate(8 + len(hb) + off)
            return
        for name, shp in tensors:
            vals = _random(rng, name, shp)
            if name.endswith("bias"):
                vals = vals - 1.0  # _random gives norm weights around 1; biases around 0
            f.write(_bf16_bits(vals).tobytes())


def write_bf16_dir(out: Path, s: dict[str, int], fill: str = "zeros", seed: int = 0) -> Path:
    """A Llama HF directory in bfloat16 (sparse zeros, or random values)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf_config(s), indent=1))
    write_tokenizer(out)
    _write_bf16_safetensors(out / "model.safetensors", [(name, shp) for name, _, shp in _tensors(s)], fill, seed)
    return out


def random_blocks(kind: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random GGUF blocks ``[rows, row_bytes]`` whose float16 scales are small and finite."""
    qk, bb = _BLOCK[kind]
    nb = cols // qk
    q = rng.integers(0, 256, (rows, nb, bb), dtype=np.uint8)
    lo, hi = (5e-5, 2e-4) if kind.endswith("_K") else (5e-4, 4e-3)  # K-quants multiply 6-bit scales in
    for at in _SCALE_AT[kind]:
        h = rng.uniform(lo, hi, (rows, nb)).astype(np.float16)
        q[:, :, at:at + 2] = h.view(np.uint8).reshape(rows, nb, 2)
    return q.reshape(rows, nb * bb)


def write_kquant_gguf(path: Path, s: dict[str, int], fill: str = "zeros", seed: int = 0,
                      kind_of: Any = q4_k_m_kind) -> Path:
    """A llama GGUF with K-quant matrices (``kind_of(gguf_name, shape)``: Q4_K_M's mix by default).

    Written the way the issue describes: tensor infos with the byte shape ``(rows, row_bytes)``
    and the raw type, header / KV / infos, then the data (a sparse hole for zeros)."""
    import gguf

    path = Path(path)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(s["layers"])
    w.add_context_length(s["context"])
    w.add_embedding_length(s["dim"])
    w.add_feed_forward_length(s["ffn"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv_heads"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(s["vocab"])
    alphabet = sorted(__import__("tokenizers").pre_tokenizers.ByteLevel.alphabet())
    tokens = alphabet + ["<|endoftext|>", "<s>"] + [f"<unused{i}>" for i in range(s["vocab"] - 258)]
    # one merge (two spaces): llama.cpp refuses a BPE vocabulary without merges
    if len(tokens) > 258:
        tokens[258] = "\u0120\u0120"
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_merges(["\u0120 \u0120"])
    w.add_token_types([3 if i in (EOS, BOS) else 1 for i in range(len(tokens))])
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(EOS)
    rng = np.random.default_rng(seed)
    datas = []
    for _, name, shp in _tensors(s):
        kind = kind_of(name, shp)
        if kind in ("F32", "F16"):
            dt = np.float32 if kind == "F32" else np.float16
            nbytes = int(np.prod(shp)) * np.dtype(dt).itemsize
            w.add_tensor_info(name, shp, np.dtype(dt), nbytes, raw_dtype=gguf.GGMLQuantizationType[kind])
            datas.append(None if fill == "zeros" else _random(rng, name, shp).astype(dt))
        else:
            qk, bb = _BLOCK[kind]
            rows, cols = shp
            nbytes = rows * cols // qk * bb
            w.add_tensor_info(name, (rows, cols // qk * bb), np.dtype(np.uint8), nbytes,
                              raw_dtype=gguf.GGMLQuantizationType[kind])
            datas.append(None if fill == "zeros" else random_blocks(kind, rows, cols, rng))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    align = 32
    sizes = [ti.nbytes for ti in w.tensors[0].values()]
    with open(path, "r+b") as f:
        f.seek(0, 2)
        start = f.tell() + (-f.tell() % align)
        total = start + sum(n + (-n % align) for n in sizes)
        if fill == "zeros":
            f.truncate(total)
        else:
            f.write(b"\0" * (start - f.tell()))
            for a, n in zip(datas, sizes, strict=True):
                f.write(a.tobytes())
                f.write(b"\0" * (-n % align))
    return path


# Falcon-RW-1B's shape (seed 000's model): ALiBi, LayerNorm with biases, GeLU MLP, tied head
FALCON_RW_1B = {"vocab": 50304, "dim": 2048, "layers": 24, "heads": 32, "ffn": 8192, "context": 2048}


def falcon_shape(**over: Any) -> dict[str, int]:
    """FALCON_RW_1B with some sizes replaced (``layers=2`` for a quick run)."""
    return {**FALCON_RW_1B, **over}


def falcon_config(s: dict[str, int]) -> dict[str, Any]:
    return {
        "architectures": ["FalconForCausalLM"], "model_type": "falcon", "vocab_size": s["vocab"],
        "hidden_size": s["dim"], "num_hidden_layers": s["layers"], "num_attention_heads": s["heads"],
        "alibi": True, "bias": True, "multi_query": False, "new_decoder_architecture": False,
        "parallel_attn": False, "layer_norm_epsilon": 1e-5, "max_position_embeddings": s["context"],
        "tie_word_embeddings": True, "bos_token_id": BOS, "eos_token_id": EOS, "torch_dtype": "bfloat16",
    }


def _falcon_tensors(s: dict[str, int]) -> list[tuple[str, tuple[int, ...]]]:
    d, f = s["dim"], s["ffn"]
    out = [("transformer.word_embeddings.weight", (s["vocab"], d))]
    for i in range(s["layers"]):
        p = f"transformer.h.{i}."
        out += [(p + "input_layernorm.weight", (d,)), (p + "input_layernorm.bias", (d,)),
                (p + "self_attention.query_key_value.weight", (3 * d, d)),
                (p + "self_attention.query_key_value.bias", (3 * d,)),
                (p + "self_attention.dense.weight", (d, d)), (p + "self_attention.dense.bias", (d,)),
                (p + "post_attention_layernorm.weight", (d,)), (p + "post_attention_layernorm.bias", (d,)),
                (p + "mlp.dense_h_to_4h.weight", (f, d)), (p + "mlp.dense_h_to_4h.bias", (f,)),
                (p + "mlp.dense_4h_to_h.weight", (d, f)), (p + "mlp.dense_4h_to_h.bias", (d,))]
    return out + [("transformer.ln_f.weight", (d,)), ("transformer.ln_f.bias", (d,))]


def write_falcon_dir(out: Path, s: dict[str, int], fill: str = "zeros", seed: int = 0) -> Path:
    """A Falcon-RW HF directory in bfloat16 (sparse zeros, or random values), tied head."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(falcon_config(s), indent=1))
    write_tokenizer(out)
    _write_bf16_safetensors(out / "model.safetensors", _falcon_tensors(s), fill, seed)
    return out
