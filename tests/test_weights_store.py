"""Weight store: safetensors reader, HF dirs, canonical names against the HF models themselves."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lminspect.errors import FormatError, UserError
from lminspect.weights import TensorInfo, TensorStore, open_store
from lminspect.weights.safetensors_format import bf16_to_f32, write_safetensors


def test_safetensors_roundtrip_dtypes(tmp_path):
    from safetensors.torch import save_file

    t = {
        "a": torch.randn(3, 4),
        "b": torch.randn(5).half(),
        "c": torch.randn(2, 3).bfloat16(),
        "d": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "e": torch.tensor([True, False]),
        "z": torch.zeros(0, 4),
    }
    save_file(t, tmp_path / "x.safetensors")
    s = open_store(tmp_path / "x.safetensors")
    assert isinstance(s, TensorStore) and s.format == "safetensors"
    assert s.keys() == list(t) or set(s.keys()) == set(t)
    for k, v in t.items():
        got = s[k]
        np.testing.assert_array_equal(got, v.float().numpy() if k == "c" else v.numpy())
    assert isinstance(s["a"], np.memmap) or isinstance(s["a"].base, np.memmap)
    info = s.info("c")
    assert isinstance(info, TensorInfo) and info.dtype == "BF16" and info.shape == (2, 3) and info.nbytes == 12
    assert "a" in s and "nope" not in s and len(s) == len(t)
    with pytest.raises(UserError):
        s["nope"]


def test_bf16_widen():
    x = torch.randn(100).bfloat16()
    np.testing.assert_array_equal(bf16_to_f32(x.view(torch.int16).numpy().view(np.uint16)), x.float().numpy())


def test_writer_reads_back(tmp_path):
    a = np.random.rand(7, 3).astype(np.float32)
    write_safetensors(tmp_path / "w.safetensors", {"a": a, "b": np.arange(3, dtype=np.int32)}, {"k": "v"})
    from safetensors.numpy import load_file

    np.testing.assert_array_equal(load_file(tmp_path / "w.safetensors")["a"], a)
    s = open_store(tmp_path / "w.safetensors")
    np.testing.assert_array_equal(s["a"], a)
    assert s.metadata == {"k": "v"}


def test_llama_dir_canonical(tiny_llama_dir):
    from transformers import LlamaForCausalLM

    s = open_store(tiny_llama_dir)
    assert s.format == "hf-dir" and s.arch == "llama"
    assert s.tokenizer_json() is not None
    sd = LlamaForCausalLM.from_pretrained(tiny_llama_dir).state_dict()
    np.testing.assert_array_equal(s.get_canonical("layers.1.attn.q.weight"), sd["model.layers.1.self_attn.q_proj.weight"].numpy())
    np.testing.assert_array_equal(s["layers.0.mlp.gate"], sd["model.layers.0.mlp.gate_proj.weight"].numpy())
    assert s.info("layers.0.attn.k.weight").shape == (32, 64)
    assert s.info("model.embed_tokens.weight").canonical == "embed.tokens.weight"
    names = set(s.canonical_names())
    assert {"embed.tokens.weight", "norm.weight", "head.weight"} <= names
    assert len([n for n in names if n.startswith("layers.3.")]) == 9
    tree = s.tree()
    assert list(tree["layers"]) == [0, 1, 2, 3]
    assert tree["layers"][0]["attn"][0] == "layers.0.attn.q.weight"
    assert tree["embeddings"] == ["embed.tokens.weight"] and tree["head"] == ["head.weight"]
    h = s.heads("layers.0.attn.q.weight")
    assert h.shape == (4, 16, 64)
    assert s.heads("layers.0.attn.k").shape == (2, 16, 64)
    assert s.heads("layers.0.attn.o.weight").shape == (4, 64, 16)


def test_llama_tied_has_no_head(tiny_llama_tied_dir):
    s = open_store(tiny_llama_tied_dir)
    assert "head.weight" not in s.canonical_names()
    assert s.config["tie_word_embeddings"] is True


def test_gpt2_canonical_matches_hf(tiny_gpt2_dir):
    from transformers import GPT2LMHeadModel

    s = open_store(tiny_gpt2_dir)
    assert s.arch == "gpt2"
    m = GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir).eval()
    x = torch.randn(2, 5, 64)
    attn = m.transformer.h[1].attn
    with torch.no_grad():
        fused = attn.c_attn(x)
    q, k, v = fused.split(64, dim=-1)
    for name, ref in (("q", q), ("k", k), ("v", v)):
        w = torch.from_numpy(s.get_canonical(f"layers.1.attn.{name}.weight"))
        b = torch.from_numpy(s.get_canonical(f"layers.1.attn.{name}.bias"))
        torch.testing.assert_close(torch.nn.functional.linear(x, w, b), ref, atol=1e-5, rtol=1e-5)
    w = s.get_canonical("layers.2.mlp.up.weight")
    assert w.shape == (256, 64)
    np.testing.assert_array_equal(w, m.transformer.h[2].mlp.c_fc.weight.detach().numpy().T)
    assert s.info("layers.2.mlp.down.weight").shape == (64, 256)
    assert "embed.positions.weight" in s.canonical_names()
    assert s.heads("layers.0.attn.v.weight").shape == (4, 16, 64)


def test_falcon_rw_split_matches_hf(tiny_falcon_dir):
    from transformers import FalconForCausalLM

    s = open_store(tiny_falcon_dir)
    assert s.arch == "falcon"
    m = FalconForCausalLM.from_pretrained(tiny_falcon_dir).eval()
    att = m.transformer.h[0].self_attention
    x = torch.randn(1, 3, 64)
    with torch.no_grad():  # falcon-rw's fused layout, by its public weight: [B, T, heads, (q, k, v), hd]
        q, k, v = att.query_key_value(x).view(1, 3, 4, 3, 16).unbind(-2)
    for name, ref in (("q", q), ("k", k), ("v", v)):
        w = torch.from_numpy(s.get_canonical(f"layers.0.attn.{name}.weight"))
        b = torch.from_numpy(s.get_canonical(f"layers.0.attn.{name}.bias"))
        got = torch.nn.functional.linear(x, w, b).view(1, 3, 4, 16)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert {"layers.2.mlp.up.weight", "layers.2.attn.o.bias", "norm.bias"} <= set(s.canonical_names())


def test_canonical_identity_checkpoint(tmp_path, tiny_llama_dir):
    src = open_store(tiny_llama_dir)
    d = tmp_path / "ckpt"
    d.mkdir()
    write_safetensors(d / "model.safetensors", {c: src.get_canonical(c) for c in src.canonical_names()})
    (d / "config.json").write_text(json.dumps({**src.config, "lminspect_arch": "llama"}))
    s = open_store(d)
    assert s.arch == "llama"
    assert set(s.canonical_names()) == set(src.canonical_names())
    np.testing.assert_array_equal(s["layers.2.attn.v.weight"], src["layers.2.attn.v.weight"])


def test_sharded_index(tmp_path):
    a, b = np.ones((2, 2), np.float32), np.zeros(3, np.float32)
    write_safetensors(tmp_path / "m-1.safetensors", {"model.norm.weight": b})
    write_safetensors(tmp_path / "m-2.safetensors", {"lm_head.weight": a})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"model.norm.weight": "m-1.safetensors", "lm_head.weight": "m-2.safetensors"}}))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    s = open_store(tmp_path)
    assert s.arch == "llama" and set(s.keys()) == {"model.norm.weight", "lm_head.weight"}
    np.testing.assert_array_equal(s["head.weight"], a)
    assert s.file_of("norm.weight").name == "m-1.safetensors"


def test_empty_dir_is_format_error(tmp_path):
    with pytest.raises(FormatError, match="no weights"):
        open_store(tmp_path)


def test_missing_path_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        open_store(tmp_path / "absent.safetensors")


def test_open_store_refuses_a_misspelled_keyword(tiny_llama_dir):
    """``open_store`` takes ``prefer`` only: a typo is a TypeError, not silently ignored."""
    assert open_store(tiny_llama_dir, prefer="gguf").arch == "llama"
    with pytest.raises(TypeError, match="prefr"):
        open_store(tiny_llama_dir, prefr="gguf")


def test_store_owns_the_model_sizes(tiny_llama_dir, tiny_gpt2_dir, tmp_path):
    """n_layers / n_heads / n_kv_heads / hidden_size / head_dim from any family's config; the layer
    count falls back to the canonical names when the config does not say."""
    s = open_store(tiny_llama_dir)
    assert (s.n_layers, s.n_heads, s.n_kv_heads, s.hidden_size, s.head_dim) == (4, 4, 2, 64, 16)
    g = open_store(tiny_gpt2_dir)  # GPT-2 spells them n_layer / n_head / n_embd
    assert g.n_layers == 3 and g.n_heads == g.n_kv_heads and g.hidden_size == g.n_heads * g.head_dim
    from safetensors.torch import save_file

    save_file({"layers.0.attn_norm.weight": torch.ones(4), "layers.2.attn_norm.weight": torch.ones(4)},
              str(tmp_path / "bare.safetensors"))
    bare = open_store(tmp_path / "bare.safetensors")
    assert bare.n_layers == 3 and bare.n_heads is None
