"""GGUF reading, un-permuting, metadata -> config/tokenizer, conversion to a HF dir."""

from __future__ import annotations

import json

import numpy as np
import pytest
from family_oracles import add_gguf_sizes

from lminspect.weights import open_store
from lminspect.weights.naming import permute_rope, unpermute_rope


def add_gpt2_tokenizer(w, src) -> None:
    """The tiny model's byte-level BPE (tokenizer.json) as GGUF tokenizer metadata, with a chat template."""
    w.add_tokenizer_model("gpt2")
    tj = json.loads(src.tokenizer_json())
    vocab = sorted(tj["model"]["vocab"].items(), key=lambda kv: kv[1])
    w.add_token_list([t for t, _ in vocab])
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in tj["model"]["merges"]])
    w.add_token_types([3 if t == "<|endoftext|>" else 1 for t, _ in vocab])
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_chat_template("{{ messages }}")


def write_llama_gguf(src_dir, path, quant_q8: bool = True, add_tokenizer=add_gpt2_tokenizer, kind_of=None):
    """A llama.cpp-style GGUF of the tiny HF llama (Q/K permuted as convert_hf_to_gguf does).

    ``add_tokenizer(writer, src_store)`` writes the tokenizer metadata (None: none). Tensors are
    float32 except ``blk.0.ffn_up.weight`` in Q8_0 (``quant_q8``), or, given ``kind_of(i, array)``,
    the GGML type name it returns for the i-th tensor (None: float32).
    """
    import gguf

    src = open_store(src_dir)
    cfg = src.config
    w = gguf.GGUFWriter(str(path), "llama")
    add_gguf_sizes(w, cfg)
    w.add_rope_freq_base(cfg.get("rope_theta") or cfg.get("rope_parameters", {}).get("rope_theta", 10000.0))
    if add_tokenizer is not None:
        add_tokenizer(w, src)
    names = {"embed.tokens.weight": "token_embd.weight", "norm.weight": "output_norm.weight",
             "head.weight": "output.weight"}
    per = {"attn_norm": "attn_norm", "attn.q": "attn_q", "attn.k": "attn_k", "attn.v": "attn_v",
           "attn.o": "attn_output", "mlp_norm": "ffn_norm", "mlp.gate": "ffn_gate", "mlp.up": "ffn_up",
           "mlp.down": "ffn_down"}
    for i, c in enumerate(src.canonical_names()):
        a = src.get_canonical(c)
        if c.startswith("layers."):
            _, n, rest = c.split(".", 2)
            g = f"blk.{n}.{per[rest.rsplit('.', 1)[0]]}.weight"
            if ".attn.q." in c:
                a = permute_rope(a, cfg["num_attention_heads"])
            if ".attn.k." in c:
                a = permute_rope(a, cfg["num_key_value_heads"])
        else:
            g = names[c]
        kind = kind_of(i, a) if kind_of is not None else "Q8_0" if quant_q8 and g == "blk.0.ffn_up.weight" else None
        if kind is not None:
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType[kind])
            w.add_tensor(g, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType[kind])
        else:
            w.add_tensor(g, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tiny_llama_dir, tmp_path_factory):
    return write_llama_gguf(tiny_llama_dir, tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def test_permute_roundtrip():
    w = np.random.rand(8 * 4, 10).astype(np.float32)
    np.testing.assert_array_equal(unpermute_rope(permute_rope(w, 4), 4), w)
    assert not np.array_equal(permute_rope(w, 4), w)


def test_gguf_store(tiny_gguf, tiny_llama_dir):
    ref = open_store(tiny_llama_dir)
    s = open_store(tiny_gguf)
    assert s.format == "gguf" and s.arch == "llama"
    assert s.info("token_embd.weight").shape == (300, 64)
    assert s.info("blk.0.ffn_up.weight").dtype == "Q8_0"
    for c in ref.canonical_names():
        got = s.get_canonical(c)
        want = ref.get_canonical(c)
        assert got.shape == want.shape, c
        if c == "layers.0.mlp.up.weight":
            np.testing.assert_allclose(got, want, atol=2e-2)
        else:
            np.testing.assert_array_equal(got, want, err_msg=c)
    cfg = s.config
    for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "vocab_size"):
        assert cfg[k] == ref.config[k], k
    assert cfg["tie_word_embeddings"] is False and cfg["model_type"] == "llama"
    assert s.chat_template == "{{ messages }}"
    assert isinstance(s["token_embd"], np.ndarray)


def test_gguf_tokenizer_matches(tiny_gguf, tiny_llama_dir):
    from tokenizers import Tokenizer

    ours = Tokenizer.from_str(open_store(tiny_gguf).tokenizer_json())
    ref = Tokenizer.from_file(str(tiny_llama_dir / "tokenizer.json"))
    text = "Once upon a time the model read <|endoftext|> books."
    assert ours.encode(text).ids == ref.encode(text).ids
    assert ours.decode(ours.encode("the weights were small").ids) == "the weights were small"


def test_convert_tiny(tiny_gguf, tiny_llama_dir, tmp_path):
    import torch
    from transformers import LlamaForCausalLM

    from lminspect.weights.convert import convert_gguf

    out = convert_gguf(tiny_gguf, tmp_path / "hf")
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json",
                                                "tokenizer_config.json", "generation_config.json"}
    a = LlamaForCausalLM.from_pretrained(out).eval()
    b = LlamaForCausalLM.from_pretrained(tiny_llama_dir).eval()
    ids = torch.tensor([[1, 5, 9, 33, 2]])
    with torch.no_grad():
        torch.testing.assert_close(a(ids).logits, b(ids).logits, atol=0.05, rtol=0)  # one Q8_0 tensor
    s = open_store(out)
    assert s.arch == "llama" and s.chat_template == "{{ messages }}"
    out16 = convert_gguf(tiny_gguf, tmp_path / "hf16", dtype="bfloat16")
    s16 = open_store(out16)
    assert s16.info("norm.weight").dtype == "BF16"
    np.testing.assert_allclose(s16["norm.weight"], s["norm.weight"], rtol=1e-2)


def test_open_reads_headers_only(tiny_gguf, monkeypatch):
    """Opening is lazy: no tensor is read or dequantized until asked for (what keeps it fast;
    the time itself is benchmarks/bench_open_stats.py's business, not a test's)."""
    from lminspect.weights.gguf_format import GGUFFile

    def no_read(self, name):
        raise AssertionError(f"open read tensor {name}")

    monkeypatch.setattr(GGUFFile, "get", no_read)
    monkeypatch.setattr(GGUFFile, "raw", no_read)
    s = open_store(tiny_gguf)
    assert len(s.keys()) > 0 and s.config


@pytest.mark.smollm2
@pytest.mark.xdist_group("smollm2")
def test_smollm2_converted_matches_hf_gguf(smollm2_gguf, smollm2_dir):
    """HF transformers on our converted dir == HF transformers on the GGUF itself (~20 s)."""
    import torch
    from transformers import LlamaForCausalLM

    s = open_store(smollm2_gguf)
    assert s.config["num_hidden_layers"] == 30 and s.config["num_key_value_heads"] == 3
    assert s.tokenizer_json() is not None and "im_start" in (s.chat_template or "")
    ours = LlamaForCausalLM.from_pretrained(smollm2_dir).eval()
    ref = LlamaForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name).eval()
    ids = torch.tensor([[1, 6403, 1980, 253, 655, 28, 665, 592]])
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, atol=1e-4, rtol=0)
    d = open_store(smollm2_dir)
    np.testing.assert_array_equal(d["layers.3.attn.k.weight"], s.get_canonical("layers.3.attn.k.weight"))
