"""Tiny random models of every family, built with transformers' own config classes: the oracles
of the exact-or-refused tests (tests/test_models_families.py).

``VARIANTS`` maps a variant name to a function returning a transformers config (tiny: width 64,
2 layers, vocab 300); :func:`build` makes the model, adds ``randn * 0.1`` to every norm weight and
bias (a unit norm or zero bias hides mistakes), saves it with ``save_pretrained`` (safetensors,
plus a tiny tokenizer) and returns the directory; :func:`hf_logits` is transformers' float32
answer. To add a family: one entry in ``VARIANTS`` per config variant worth telling apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

V, D, L = 300, 64, 2  # vocab, width, layers
BASE = dict(vocab_size=V, hidden_size=D, intermediate_size=96, num_hidden_layers=L, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, bos_token_id=0, eos_token_id=0, pad_token_id=None)


def _t() -> Any:
    import transformers

    return transformers


DROP = object()  # a base key this config class does not take


def _cfg(cls: str, **kw: Any) -> Callable[[], Any]:
    """A variant: transformers' ``cls`` with the tiny base sizes, updated by ``kw`` (``DROP`` drops a key)."""
    def make() -> Any:
        args = {**BASE, **kw}
        return getattr(_t(), cls)(**{k: v for k, v in args.items() if v is not DROP})
    return make


def _rope(kind: str, **kw: Any) -> dict:
    return {"rope_type": kind, "rope_theta": 10000.0, **kw}


VARIANTS: dict[str, Callable[[], Any]] = {
    # Llama and its rope scalings
    "llama": _cfg("LlamaConfig"),
    "llama_tied_odd_head": _cfg("LlamaConfig", tie_word_embeddings=True, head_dim=12),
    "llama_bias": _cfg("LlamaConfig", attention_bias=True, mlp_bias=True),
    "llama_mha": _cfg("LlamaConfig", num_key_value_heads=4, rope_theta=500000.0),
    "llama_gelu_mqa": _cfg("LlamaConfig", hidden_act="gelu", num_key_value_heads=1, head_dim=8),
    "llama_rope_llama3": _cfg("LlamaConfig", rope_parameters=_rope(
        "llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16)),
    "llama_rope_linear": _cfg("LlamaConfig", rope_parameters=_rope("linear", factor=4.0)),
    "llama_rope_dynamic": _cfg("LlamaConfig", max_position_embeddings=32,
                               rope_parameters=_rope("dynamic", factor=2.0)),
    "llama_rope_yarn": _cfg("LlamaConfig", rope_parameters=_rope(
        "yarn", factor=4.0, original_max_position_embeddings=32)),
    # Qwen
    "qwen2": _cfg("Qwen2Config"),
    "qwen2_tied": _cfg("Qwen2Config", tie_word_embeddings=True),
    "qwen2_sliding": _cfg("Qwen2Config", use_sliding_window=True, sliding_window=4, max_window_layers=1),
    "qwen2_yarn": _cfg("Qwen2Config", rope_parameters=_rope("yarn", factor=4.0, original_max_position_embeddings=32)),
    "qwen3": _cfg("Qwen3Config", head_dim=16),
    "qwen3_sliding": _cfg("Qwen3Config", head_dim=16, use_sliding_window=True, sliding_window=6, max_window_layers=0),
    "qwen3_bias_odd_head": _cfg("Qwen3Config", head_dim=24, attention_bias=True),
    # Mistral
    "mistral_nowindow": _cfg("MistralConfig", sliding_window=None, head_dim=16),
    "mistral_window": _cfg("MistralConfig", sliding_window=5, head_dim=16),
    "mistral_window_1_tied": _cfg("MistralConfig", sliding_window=1, head_dim=16, tie_word_embeddings=True),
    # Granite, SmolLM3, OLMo 2
    "granite": _cfg("GraniteConfig", embedding_multiplier=3.0, residual_multiplier=0.5,
                    attention_multiplier=0.3, logits_scaling=2.5),
    "smollm3": _cfg("SmolLM3Config", no_rope_layer_interval=2),
    "smollm3_layers": _cfg("SmolLM3Config", num_hidden_layers=3, no_rope_layers=[1, 0, 1]),
    "smollm3_window": _cfg("SmolLM3Config", no_rope_layer_interval=2, use_sliding_window=True, sliding_window=5),
    "granite_tied_bias": _cfg("GraniteConfig", tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
                              embedding_multiplier=12.0, logits_scaling=8.0, attention_multiplier=0.05),
    "olmo2": _cfg("Olmo2Config"),
    "olmo2_bias_tied_mha": _cfg("Olmo2Config", attention_bias=True, tie_word_embeddings=True, num_key_value_heads=4),
    # Gemma, Phi-3, GPT-NeoX, StableLM (more variants, decode and batches: tests/test_models_families_more.py)
    "gemma": _cfg("GemmaConfig", head_dim=16),
    "gemma2": _cfg("Gemma2Config", head_dim=16, sliding_window=5, query_pre_attn_scalar=16),
    "gemma3_text": _cfg("Gemma3TextConfig", head_dim=16, sliding_window=5, query_pre_attn_scalar=16),
    "phi3": _cfg("Phi3Config"),
    "gpt_neox": _cfg("GPTNeoXConfig", num_key_value_heads=DROP),
    "gpt_neox_serial": _cfg("GPTNeoXConfig", num_key_value_heads=DROP, use_parallel_residual=False),
    "stablelm": _cfg("StableLmConfig"),
    "stablelm_qk_norm": _cfg("StableLmConfig", qk_layernorm=True, use_qkv_bias=True, num_key_value_heads=4),
    # GPT-2 and Falcon
    "gpt2": lambda: _t().GPT2Config(vocab_size=V, n_embd=D, n_layer=L, n_head=4, n_positions=128,
                                    bos_token_id=0, eos_token_id=0),
    "gpt2_relu_inner": lambda: _t().GPT2Config(vocab_size=V, n_embd=D, n_layer=L, n_head=4, n_positions=128, n_inner=80,
                                               activation_function="relu", reorder_and_upcast_attn=True,
                                               bos_token_id=0, eos_token_id=0),
    "gpt2_unscaled": lambda: _t().GPT2Config(vocab_size=V, n_embd=D, n_layer=L, n_head=4, n_positions=128,
                                             scale_attn_weights=False, bos_token_id=0, eos_token_id=0),
    "gpt2_layer_scaled": lambda: _t().GPT2Config(vocab_size=V, n_embd=D, n_layer=L, n_head=4, n_positions=128,
                                                 scale_attn_by_inverse_layer_idx=True, bos_token_id=0,
                                                 eos_token_id=0),
    "gpt2_untied": lambda: _t().GPT2Config(vocab_size=V, n_embd=D, n_layer=L, n_head=4, n_positions=128,
                                           tie_word_embeddings=False, bos_token_id=0, eos_token_id=0),
    "falcon_rw": lambda: _t().FalconConfig(vocab_size=V, hidden_size=D, num_hidden_layers=L, num_attention_heads=4,
                                           alibi=True, multi_query=False, new_decoder_architecture=False,
                                           parallel_attn=False, bias=True, bos_token_id=0, eos_token_id=0),
    "falcon_7b_like": lambda: _t().FalconConfig(vocab_size=V, hidden_size=D, num_hidden_layers=L,
                                                num_attention_heads=4, alibi=False, multi_query=True,
                                                new_decoder_architecture=False, parallel_attn=True, bias=False,
                                                bos_token_id=0, eos_token_id=0),
    "falcon_mq_serial": lambda: _t().FalconConfig(vocab_size=V, hidden_size=D, num_hidden_layers=L,
                                                  num_attention_heads=4, alibi=False, multi_query=True,
                                                  new_decoder_architecture=False, parallel_attn=False, bias=True,
                                                  bos_token_id=0, eos_token_id=0),
    "falcon_alibi_parallel": lambda: _t().FalconConfig(vocab_size=V, hidden_size=D, num_hidden_layers=L,
                                                       num_attention_heads=4, alibi=True, multi_query=False,
                                                       new_decoder_architecture=False, parallel_attn=True, bias=False,
                                                       bos_token_id=0, eos_token_id=0),
    "falcon_new_arch": lambda: _t().FalconConfig(vocab_size=V, hidden_size=D, num_hidden_layers=L,
                                                 num_attention_heads=4, num_kv_heads=2, new_decoder_architecture=True,
                                                 bos_token_id=0, eos_token_id=0),
    # mixtures of experts: always refused
    "mixtral": _cfg("MixtralConfig", num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": _cfg("Qwen2MoeConfig", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                      shared_expert_intermediate_size=32),
    "qwen3_moe": _cfg("Qwen3MoeConfig", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                      head_dim=16),
    "olmoe": _cfg("OlmoeConfig", num_experts=4, num_experts_per_tok=2),
}


def _perturb(model: Any, seed: int) -> None:
    """``randn * 0.1`` added to every 1-D parameter (norm weights and biases)."""
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


def build(variant: str, out_dir: Path, seed: int = 0) -> Path:
    """Save variant's tiny perturbed model (+ a tokenizer) under ``out_dir``; returns the directory."""
    import torch
    from conftest import make_tokenizer_json

    torch.manual_seed(seed)
    cfg = VARIANTS[variant]()
    model = _t().AutoModelForCausalLM.from_config(cfg).eval()
    _perturb(model, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    make_tokenizer_json(out_dir, vocab_size=V)
    return out_dir


def hf_model(path: Path) -> Any:
    import torch

    return _t().AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def hf_logits(path: Path, ids: Any, attention_mask: Any = None) -> Any:
    """transformers' float32 logits ``[B, T, V]`` for ``ids`` (a LongTensor ``[B, T]``)."""
    import torch

    with torch.no_grad():
        return hf_model(path)(input_ids=ids, attention_mask=attention_mask).logits


def config_of(path: Path) -> dict:
    return json.loads((Path(path) / "config.json").read_text())


# llama.cpp's own converter, run on a tiny model: its BPE check hashes the tokenizer's output, so
# the tiny tokenizer is declared "smollm"; with no tokenizer.model it takes the GPT-2 BPE path.
_CONVERT = """
import sys
sys.path[:0] = [sys.argv[1] + "/gguf-py", sys.argv[1]]
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "smollm"
def _no_spm(self, *a, **k):
    raise FileNotFoundError("no tokenizer.model")
base.TextModel._set_vocab_sentencepiece = _no_spm
import convert_hf_to_gguf as c
sys.argv = ["convert_hf_to_gguf.py", sys.argv[2], "--outfile", sys.argv[3], "--outtype", sys.argv[4]]
c.main()
"""


def llama_cpp_dir() -> Path | None:
    """A llama.cpp source tree (``LMINSPECT_LLAMA_CPP``; e.g. vendor/llama.cpp of the llama-cpp-python
    sdist from PyPI), or None: the converter tests skip."""
    import os

    d = os.environ.get("LMINSPECT_LLAMA_CPP")
    return Path(d) if d and (Path(d) / "convert_hf_to_gguf.py").is_file() else None


def convert_with_llama_cpp(src: Path, out: Path, outtype: str = "f32") -> Path:
    import subprocess
    import sys

    if json.loads((Path(src) / "config.json").read_text()).get("model_type") == "phi3":  # its BPE path, not SentencePiece
        (Path(src) / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}))
    r = subprocess.run([sys.executable, "-c", _CONVERT, str(llama_cpp_dir()), str(src), str(out), outtype],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def add_gguf_sizes(w: Any, cfg: dict, layer_norm: bool = False) -> None:
    """The size keys every llama.cpp-layout test GGUF writes from an HF config (layers, context,
    widths, heads, the RMSNorm epsilon or with ``layer_norm`` the LayerNorm one); the family's own
    keys follow at the caller."""
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    if layer_norm:
        w.add_layer_norm_eps(cfg["layer_norm_eps"])
    else:
        w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
