"""Every model family lminspect knows, as data, and the one detector that reads it.

A family is a :class:`FamilySpec`: how to recognise it (HF ``model_type`` / ``architectures``,
GGUF ``general.architecture``), which engine class runs it, its tensor names (HF and GGUF
:class:`NameTable`), and the config keys whose math that engine implements, each with the
values it accepts (modelled on mergekit's architecture JSON files). The rule is *exact or
refused*: a config whose family is unknown, a mixture of experts, or that sets any key to a value
the engine does not compute is refused in one line, never run approximately.

Key policy (:func:`unsupported_keys`): a key in the family's ``keys`` table must pass its check;
a bookkeeping key (:data:`BOOKKEEPING`: ids, dtypes, dropout, ``lminspect_*``...) is ignored;
any other key is accepted only when it is unset (None / false / 0 / empty), since a key the
engine has never heard of may change the math.

Adding a family: write one ``FamilySpec`` below (its names, its key table, the engine key),
append it to :data:`SPECS`, and put only what is truly new in the math in a models/ module
(a config field read in the engine's ``from_hf`` plus the code that uses it). The exact-or-refused
test (tests/test_models_families.py) then covers it once its oracle is added to
tests/family_oracles.py. This module is data: it imports nothing above ``errors``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lminspect.errors import UserError
from lminspect.weights.nametable import NameTable

Check = Callable[[Any, Mapping[str, Any]], bool]  # (value, whole config) -> the engine computes it


def ANY(v: Any, cfg: Mapping[str, Any]) -> bool:  # noqa: N802 - reads as a constant in the tables
    """The engine reads this key whatever its value (sizes, epsilons, theta...)."""
    return True


def unset(v: Any, cfg: Mapping[str, Any] | None = None) -> bool:
    """None / false / 0 / empty: the feature is off."""
    return v is None or v is False or (isinstance(v, int | float) and v == 0) or v in ("", [], {})


def one_of(*values: Any) -> Check:
    """Only these values (a bool never stands for a number, nor 1 for true)."""
    return lambda v, cfg: any(v == x and isinstance(v, bool) == isinstance(x, bool) for x in values)


def none_or(*values: Any) -> Check:
    """Absent (None: transformers' default) or one of ``values``; false is a value, not "unset"."""
    ok = one_of(*values)
    return lambda v, cfg: v is None or ok(v, cfg)


def all_full_attention(v: Any, cfg: Mapping[str, Any]) -> bool:
    """``layer_types`` (transformers 5) with every layer a plain causal one."""
    return v is None or (isinstance(v, list) and all(t == "full_attention" for t in v))


_NEEDS = {"freq_factors": ("factors",), "linear": ("factor",), "dynamic": ("factor",), "yarn": ("factor", "original_max_position_embeddings"),
          "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}


def rope(*types: str, partial: bool = False) -> Check:
    """``rope_scaling`` / ``rope_parameters``: None or a dict whose ``rope_type`` is one of ``types``
    (``partial``: ``partial_rotary_factor`` below 1 is computed too). transformers 5's per-layer-type
    nesting ({"full_attention": {...}, "sliding_attention": {...}}) is refused unless all equal."""
    allowed = set(types) | {"default"}
    known = {"rope_type", "type", "rope_theta", "factor", "original_max_position_embeddings",
             "low_freq_factor", "high_freq_factor", "attention_factor", "beta_fast", "beta_slow",
             "mscale", "mscale_all_dim", "truncate", "partial_rotary_factor", "factors"}

    def check(v: Any, cfg: Mapping[str, Any]) -> bool:
        if v is None:
            return True
        if not isinstance(v, dict):
            return False
        kind = v.get("rope_type", v.get("type")) or "default"
        if kind not in allowed or not set(v) <= known or any(v.get(k) is None for k in _NEEDS.get(kind, ())):
            return False
        prf = v.get("partial_rotary_factor")
        return prf is None or prf == 1.0 or partial
    return check


# Keys that never change what a forward computes (ids, dtypes, dropout at inference, serving flags).
BOOKKEEPING = frozenset({
    "_name_or_path", "architectures", "model_type", "transformers_version", "torch_dtype", "dtype",
    "bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id",
    "use_cache", "initializer_range", "initializer_factor", "id2label", "label2id", "num_labels",
    "chunk_size_feed_forward", "output_attentions", "output_hidden_states", "return_dict",
    "problem_type", "is_encoder_decoder", "is_decoder", "tokenizer_class", "prefix", "auto_map",
    "task_specific_params", "finetuning_task", "use_bfloat16", "tf_legacy_loss", "torchscript",
    "pruned_heads", "quantization_config_ignored", "transformers.js_config", "is_llama_config",
    "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "num_beam_groups",
    "temperature", "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty",
    "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences",
    "output_scores", "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
    "begin_suppress_tokens", "diversity_penalty", "cross_attention_hidden_size", "add_cross_attention",
    "tie_encoder_decoder", "router_aux_loss_coef", "output_router_logits", "pretraining_tp",
    "attn_implementation", "_attn_implementation_autoset", "max_window_layers",
    "gguf:architecture",  # a GGUF's general.architecture (weights/gguf_format.py): read by family_of
})
_DROPOUT = ("dropout", "pdrop")  # key substrings: no effect in eval mode


def _is_bookkeeping(key: str) -> bool:
    return key in BOOKKEEPING or key.startswith("lminspect_") or any(s in key for s in _DROPOUT)


# ---------------------------------------------------------------- name tables

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

QWEN3_HF = NameTable(  # Llama's names plus the per-head q/k norms
    top=LLAMA_HF.top, block=LLAMA_HF.block,
    layer={**LLAMA_HF.layer, "self_attn.q_norm": "attn.q_norm", "self_attn.k_norm": "attn.k_norm"},
)

OLMO2_HF = NameTable(  # no pre-norms; HF's post_attention_layernorm is the norm *after* attention here
    top=LLAMA_HF.top, block=LLAMA_HF.block,
    layer={**{k: v for k, v in LLAMA_HF.layer.items() if not k.endswith("layernorm")},
           "self_attn.q_norm": "attn.q_norm", "self_attn.k_norm": "attn.k_norm",
           "post_attention_layernorm": "attn_post_norm", "post_feedforward_layernorm": "mlp_post_norm"},
)

GGUF_QWEN3 = NameTable(top=GGUF_LLAMA.top, block=GGUF_LLAMA.block,
                       layer={**GGUF_LLAMA.layer, "attn_q_norm": "attn.q_norm", "attn_k_norm": "attn.k_norm"})

GGUF_OLMO2 = NameTable(
    top=GGUF_LLAMA.top, block=GGUF_LLAMA.block,
    layer={**{k: v for k, v in GGUF_LLAMA.layer.items() if not k.endswith("norm")},
           "attn_q_norm": "attn.q_norm", "attn_k_norm": "attn.k_norm",
           "post_attention_norm": "attn_post_norm", "post_ffw_norm": "mlp_post_norm"},
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


GEMMA2_HF = NameTable(  # Gemma 2/3: four norms per block (post_attention_layernorm is a post-norm here)
    top=LLAMA_HF.top,
    block="model.layers.{N}.",
    layer={**{k: v for k, v in LLAMA_HF.layer.items() if k != "post_attention_layernorm"},
           "post_attention_layernorm": "attn_post_norm", "pre_feedforward_layernorm": "mlp_norm",
           "post_feedforward_layernorm": "mlp_post_norm", "self_attn.q_norm": "attn.q_norm",
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

GGUF_PHI3 = NameTable(  # llama.cpp keeps the fused tensors as they are; q/k not permuted
    top=GGUF_LLAMA.top, block=GGUF_LLAMA.block,
    layer={"attn_norm": "attn_norm", "attn_output": "attn.o", "ffn_norm": "mlp_norm", "ffn_down": "mlp.down"},
    fused_qkv="attn_qkv", fused_gate_up="ffn_up",
)

GPTNEOX_HF = NameTable(  # transformers 5 renames embed_out to lm_head when loading; both are read
    top={"gpt_neox.embed_in": "embed.tokens", "gpt_neox.final_layer_norm": "norm", "embed_out": "head",
         "lm_head": "head"},
    block="gpt_neox.layers.{N}.",
    layer={"input_layernorm": "attn_norm", "attention.dense": "attn.o", "post_attention_layernorm": "mlp_norm",
           "mlp.dense_h_to_4h": "mlp.up", "mlp.dense_4h_to_h": "mlp.down"},
    fused_qkv="attention.query_key_value",  # rows [n_head, 3, head_dim], as Falcon-RW
)

GGUF_STABLELM = NameTable(  # llama.cpp's converter: q/k not permuted; q/k norms stacked [n_head, head_dim]
    top=GGUF_LLAMA.top, block=GGUF_LLAMA.block,
    layer={**GGUF_LLAMA.layer, "attn_q_norm": "attn.q_norm", "attn_k_norm": "attn.k_norm"},
)

STABLELM_HF = NameTable(
    top=LLAMA_HF.top,
    block="model.layers.{N}.",
    layer=LLAMA_HF.layer,
    nested={"self_attn.q_layernorm": "attn.q_norm", "self_attn.k_layernorm": "attn.k_norm"},  # norms.{h}
)


# ---------------------------------------------------------------- the description


@dataclass(frozen=True)
class FamilySpec:
    """One model family as data (see the module docstring for how to add one)."""

    name: str  # what users see and ``store.arch`` holds ("qwen2"); also accepted as ``lminspect_arch``
    engine: str  # key of the engine class that runs it (models.FAMILIES: "llama", "gpt2", "falcon"); "" = none
    model_types: tuple[str, ...]  # HF config.json ``model_type`` values
    architectures: tuple[str, ...] = ()  # HF ``architectures`` entries (``XForCausalLM``)
    gguf_archs: tuple[str, ...] = ()  # GGUF ``general.architecture`` values
    keys: Mapping[str, Check] = field(default_factory=dict)  # config keys the engine computes -> accepted values
    hf_names: NameTable | None = None  # HF tensor names <-> canonical (read and export)
    gguf_names: NameTable | None = None  # llama.cpp tensor names <-> canonical
    gguf_rope_permuted: bool = False  # llama.cpp's converter interleaved q/k rows per head (its LlamaModel does)
    refused: str = ""  # recognised but never run: why (e.g. "mixture-of-experts")

    @property
    def supported(self) -> bool:
        return bool(self.engine) and not self.refused


# What the Llama engine computes (models/llama.py); families built on it add their own keys.
# models/rope.py; freq_factors is a GGUF's rope_freqs table (llama.cpp's form of llama3)
_SCALINGS = ("linear", "dynamic", "yarn", "llama3", "freq_factors")
_LLAMA_KEYS: dict[str, Check] = {
    "vocab_size": ANY, "hidden_size": ANY, "num_hidden_layers": ANY, "num_attention_heads": ANY,
    "num_key_value_heads": ANY, "head_dim": ANY, "intermediate_size": ANY, "rms_norm_eps": ANY,
    "max_position_embeddings": ANY, "rope_theta": ANY, "tie_word_embeddings": ANY,
    "attention_bias": ANY, "mlp_bias": ANY,
    "hidden_act": one_of("silu", "swish", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu"),
    "rope_scaling": rope(*_SCALINGS), "rope_parameters": rope(*_SCALINGS),
    "rope_interleaved": unset,  # nanotron's flag (SmolLM2): false is HF's half-split rotation
    "layer_types": all_full_attention,
}
_NO_MLP_BIAS = {"mlp_bias": unset}  # families whose MLP never has biases


def _window_types(v: Any, cfg: Mapping[str, Any]) -> bool:
    return v is None or (isinstance(v, list) and all(t in ("full_attention", "sliding_attention") for t in v))


# Qwen2-style optional windows: use_sliding_window switches them on, layer_types / max_window_layers say where
def _window(v: Any, cfg: Mapping[str, Any]) -> bool:
    return v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1)


_WINDOWS: dict[str, Check] = {"use_sliding_window": ANY, "sliding_window": _window, "max_window_layers": ANY,
                              "layer_types": _window_types}

LLAMA = FamilySpec(
    name="llama", engine="llama", model_types=("llama",), architectures=("LlamaForCausalLM",),
    gguf_archs=("llama",), keys=_LLAMA_KEYS, hf_names=LLAMA_HF, gguf_names=GGUF_LLAMA, gguf_rope_permuted=True,
)

MISTRAL = FamilySpec(  # Llama with a sliding attention window in every layer (models/window.py)
    name="mistral", engine="llama", model_types=("mistral",), architectures=("MistralForCausalLM",),
    keys={**_LLAMA_KEYS, **_NO_MLP_BIAS, "attention_bias": unset, "sliding_window": _window}, hf_names=LLAMA_HF,
)

QWEN2 = FamilySpec(  # q/k/v biases, none on o; optional windowed layers
    name="qwen2", engine="llama", model_types=("qwen2",), architectures=("Qwen2ForCausalLM",), gguf_archs=("qwen2",),
    keys={**_LLAMA_KEYS, **_NO_MLP_BIAS, **_WINDOWS}, hf_names=LLAMA_HF, gguf_names=GGUF_LLAMA,
)

QWEN3 = FamilySpec(  # RMSNorm per head on q and k, before RoPE
    name="qwen3", engine="llama", model_types=("qwen3",), architectures=("Qwen3ForCausalLM",), gguf_archs=("qwen3",),
    keys={**_LLAMA_KEYS, **_NO_MLP_BIAS, **_WINDOWS}, hf_names=QWEN3_HF, gguf_names=GGUF_QWEN3,
)

GRANITE = FamilySpec(  # embedding / residual / attention / logits multipliers
    name="granite", engine="llama", model_types=("granite",), architectures=("GraniteForCausalLM",),
    gguf_archs=("granite",), gguf_names=GGUF_LLAMA, gguf_rope_permuted=True, keys={**_LLAMA_KEYS, "embedding_multiplier": ANY, "residual_multiplier": ANY, "attention_multiplier": ANY,
          "logits_scaling": ANY}, hf_names=LLAMA_HF,
)

SMOLLM3 = FamilySpec(  # some layers without RoPE
    name="smollm3", engine="llama", model_types=("smollm3",), architectures=("SmolLM3ForCausalLM",),
    gguf_archs=("smollm3",), gguf_names=GGUF_LLAMA, gguf_rope_permuted=True, keys={**_LLAMA_KEYS, **_WINDOWS, "no_rope_layers": ANY, "no_rope_layer_interval": ANY}, hf_names=LLAMA_HF,
)

OLMO2 = FamilySpec(  # norms after attention / MLP instead of before, q/k norms over the whole projection
    name="olmo2", engine="llama", model_types=("olmo2",), architectures=("Olmo2ForCausalLM",), gguf_archs=("olmo2",),
    keys={**_LLAMA_KEYS, **_NO_MLP_BIAS}, hf_names=OLMO2_HF, gguf_names=GGUF_OLMO2,
)

GPT2 = FamilySpec(
    name="gpt2", engine="gpt2", model_types=("gpt2",), architectures=("GPT2LMHeadModel", "GPT2Model"),
    gguf_archs=(), hf_names=GPT2_HF,
    keys={
        "vocab_size": ANY, "n_embd": ANY, "n_layer": ANY, "n_head": ANY, "n_inner": ANY, "n_positions": ANY,
        "n_ctx": ANY, "layer_norm_epsilon": ANY,
        "activation_function": one_of("gelu_new", "gelu", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu"),
        "tie_word_embeddings": none_or(True),  # the engine always ties GPT-2's head
        "scale_attn_weights": none_or(True), "scale_attn_by_inverse_layer_idx": unset,
        "reorder_and_upcast_attn": ANY,  # float32 either way
        "summary_type": ANY, "summary_use_proj": ANY, "summary_activation": ANY,  # the double-heads model only
        "summary_proj_to_labels": ANY, "summary_first_dropout": ANY,
    },
)

FALCON = FamilySpec(
    name="falcon", engine="falcon", model_types=("falcon", "RefinedWebModel", "RefinedWeb"),
    architectures=("FalconForCausalLM", "RWForCausalLM"), hf_names=FALCON_HF,
    keys={
        "vocab_size": ANY, "hidden_size": ANY, "num_hidden_layers": ANY, "num_attention_heads": ANY,
        "n_layer": ANY, "n_head": ANY, "layer_norm_epsilon": ANY, "max_position_embeddings": ANY,
        "tie_word_embeddings": ANY, "alibi": ANY, "multi_query": ANY, "parallel_attn": ANY, "bias": ANY,
        "ffn_hidden_size": ANY, "activation": one_of("gelu"), "new_decoder_architecture": unset,
        # HF reads num_kv_heads outside new_decoder_architecture only when not multi_query
        "num_kv_heads": lambda v, cfg: v is None or cfg.get("multi_query", True) or v == cfg.get("num_attention_heads"),
        "num_key_value_heads": ANY,
        "num_ln_in_parallel_attn": ANY, "rope_theta": ANY, "rope_scaling": rope(), "rope_parameters": rope(),
    },
)

_ACTS = one_of("silu", "swish", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu")
_SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
          "head_dim", "intermediate_size", "max_position_embeddings", "tie_word_embeddings")


def _layer_types(v: Any, cfg: Mapping[str, Any]) -> bool:
    """Gemma 2/3's ``layer_types``: each layer full or sliding."""
    return v is None or (isinstance(v, list) and all(t in ("full_attention", "sliding_attention") for t in v))


def _gemma3_rope(v: Any, cfg: Mapping[str, Any]) -> bool:
    """Gemma 3's ``rope_parameters``: flat, or per layer type; the global layers may scale linearly."""
    if isinstance(v, dict) and any(isinstance(x, dict) for x in v.values()):
        return (set(v) <= {"full_attention", "sliding_attention"} and rope("linear")(v.get("full_attention"), cfg)
                and rope()(v.get("sliding_attention"), cfg))
    return rope("linear")(v, cfg)


# Gemma 1/2/3 (models/gemma.py); keys transformers' class for that version does not read are refused
_GEMMA_KEYS: dict[str, Check] = {
    **dict.fromkeys(_SIZES, ANY), "rms_norm_eps": ANY, "rope_theta": ANY, "attention_bias": ANY,
    "rope_scaling": rope(), "rope_parameters": rope(), "use_bidirectional_attention": unset,
    "hidden_act": _ACTS, "hidden_activation": none_or("gelu_pytorch_tanh"),
}
_GEMMA2_KEYS: dict[str, Check] = {
    **_GEMMA_KEYS, "hidden_act": ANY, "hidden_activation": _ACTS,  # Gemma 2/3 read hidden_activation only
    "query_pre_attn_scalar": ANY, "sliding_window": ANY, "layer_types": _layer_types,
    "attn_logit_softcapping": ANY, "final_logit_softcapping": ANY, "cache_implementation": ANY,
    "sliding_window_size": ANY,  # transformers 4.42's spelling, never read
}
_GEMMA3_KEYS: dict[str, Check] = {
    **_GEMMA2_KEYS, "attn_logit_softcapping": unset,  # transformers' Gemma 3 ignores it: refused
    "rope_scaling": rope("linear"), "rope_parameters": _gemma3_rope, "rope_local_base_freq": ANY,
    "sliding_window_pattern": ANY, "_sliding_window_pattern": ANY,  # layer_types, when given, wins
}
GEMMA = FamilySpec(name="gemma", engine="gemma", model_types=("gemma",), architectures=("GemmaForCausalLM",),
                   keys=_GEMMA_KEYS, hf_names=LLAMA_HF)
GEMMA2 = FamilySpec(name="gemma2", engine="gemma", model_types=("gemma2",), architectures=("Gemma2ForCausalLM",),
                    keys=_GEMMA2_KEYS, hf_names=GEMMA2_HF)
GEMMA3 = FamilySpec(name="gemma3", engine="gemma", model_types=("gemma3_text",),
                    architectures=("Gemma3ForCausalLM",), keys=_GEMMA3_KEYS, hf_names=GEMMA2_HF)
GEMMA3_VLM = FamilySpec(name="gemma3-vision", engine="", model_types=("gemma3",),
                        architectures=("Gemma3ForConditionalGeneration",),
                        refused="vision-language")  # its text model (gemma3_text) runs

PHI3 = FamilySpec(  # longrope / su / yarn (the 128k models) refused by rope()
    name="phi3", engine="phi3", model_types=("phi3",), architectures=("Phi3ForCausalLM",), hf_names=PHI3_HF,
    gguf_archs=("phi3",), gguf_names=GGUF_PHI3,
    keys={**dict.fromkeys(_SIZES, ANY), "rms_norm_eps": ANY, "rope_theta": ANY, "partial_rotary_factor": ANY,
          "rope_scaling": rope(partial=True), "rope_parameters": rope(partial=True), "sliding_window": ANY,
          "hidden_act": _ACTS, "original_max_position_embeddings": ANY},  # the last: read by longrope only
)
GPTNEOX = FamilySpec(
    name="gptneox", engine="gptneox", model_types=("gpt_neox",), architectures=("GPTNeoXForCausalLM",),
    hf_names=GPTNEOX_HF,
    keys={**dict.fromkeys(_SIZES, ANY), "layer_norm_eps": ANY, "rotary_pct": ANY, "rotary_emb_base": ANY,
          "rope_theta": ANY, "partial_rotary_factor": ANY, "rope_scaling": rope(partial=True),
          "rope_parameters": rope(partial=True), "use_parallel_residual": ANY, "attention_bias": ANY,
          "hidden_act": _ACTS},
)
STABLELM = FamilySpec(
    name="stablelm", engine="stablelm", model_types=("stablelm",), architectures=("StableLmForCausalLM",),
    hf_names=STABLELM_HF, gguf_archs=("stablelm",), gguf_names=GGUF_STABLELM,
    keys={**dict.fromkeys(_SIZES, ANY), "layer_norm_eps": ANY, "rope_theta": ANY, "partial_rotary_factor": ANY,
          "rope_scaling": rope(partial=True), "rope_parameters": rope(partial=True), "use_qkv_bias": ANY,
          "qk_layernorm": ANY, "use_parallel_residual": ANY, "hidden_act": _ACTS},
)

# Recognised, never run: the engine has no router / experts.
_MOE = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "granitemoe", "granitemoeshared", "granitemoehybrid",
        "phimoe", "deepseek_v2", "deepseek_v3", "dbrx", "jamba", "jetmoe", "minimax", "llama4", "gpt_oss",
        "qwen3_next", "ernie4_5_moe", "glm4_moe", "hunyuan_v1_moe", "dots1", "flex_olmo", "arctic")
_MOE_GGUF = ("qwen2moe", "qwen3moe", "olmoe", "granitemoe", "phimoe", "deepseek2", "dbrx", "jamba", "llama4")
MOE = [FamilySpec(name=mt, engine="", model_types=(mt,), gguf_archs=(g,) if g in _MOE_GGUF else (),
                  refused="mixture-of-experts") for mt in _MOE for g in (mt.replace("_", ""),)]

SPECS: list[FamilySpec] = [LLAMA, MISTRAL, QWEN2, QWEN3, GRANITE, SMOLLM3, OLMO2, GPT2, FALCON, GEMMA, GEMMA2, GEMMA3,
                           GEMMA3_VLM, PHI3, GPTNEOX, STABLELM, *MOE]


# ---------------------------------------------------------------- the detector


def spec_named(name: str) -> FamilySpec | None:
    """The spec with this family name (an ``lminspect_arch`` value or a store's ``arch``)."""
    return next((s for s in SPECS if s.name == name), None)


def family_of(config: Mapping[str, Any] | None) -> FamilySpec | None:
    """The family a HF-style config describes: ``lminspect_arch`` (lminspect's own checkpoints),
    then ``model_type``, then ``architectures``. Never guessed from tensor names."""
    cfg = config or {}
    if cfg.get("lminspect_arch"):
        return spec_named(str(cfg["lminspect_arch"]))
    if cfg.get("gguf:architecture"):
        return gguf_family(str(cfg["gguf:architecture"]))
    mt = cfg.get("model_type")
    if mt:
        return next((s for s in SPECS if str(mt) in s.model_types), None)
    archs = cfg.get("architectures") or []
    for a in archs if isinstance(archs, list) else [archs]:
        hit = next((s for s in SPECS if str(a) in s.architectures), None)
        if hit:
            return hit
    return None


def gguf_family(arch: str | None) -> FamilySpec | None:
    """The family of a GGUF ``general.architecture`` value."""
    return next((s for s in SPECS if arch in s.gguf_archs), None) if arch else None


def supported_names() -> str:
    return ", ".join(s.name for s in SPECS if s.supported)


def _show(v: Any) -> str:
    text = json.dumps(v, separators=(", ", ": "), default=str) if isinstance(v, dict | list | str) else repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def unsupported_keys(spec: FamilySpec, config: Mapping[str, Any]) -> list[str]:
    """``key=value`` for every key of ``config`` the family's engine does not compute."""
    bad = []
    for key, v in config.items():
        check = spec.keys.get(key)
        if check is not None:
            if not check(v, config):
                bad.append(f"{key}={_show(v)}")
        elif not _is_bookkeeping(key) and not unset(v):
            bad.append(f"{key}={_show(v)}")
    return bad


def check_family(config: Mapping[str, Any] | None, where: str) -> FamilySpec:
    """The family of ``config`` if lminspect computes it exactly, else a one-line ``UserError``.

    ``where`` names the model (its directory or file) at the start of the message."""
    cfg = dict(config or {})
    spec = family_of(cfg)
    also = f"(supported families: {supported_names()})"
    if spec is None:
        if cfg.get("lminspect_arch"):
            what = f"lminspect_arch {cfg['lminspect_arch']!r}"
        elif cfg.get("gguf:architecture"):
            what = f"GGUF architecture {cfg['gguf:architecture']!r}"
            if spec_named(str(cfg["gguf:architecture"])) is not None:  # e.g. gemma2: its HF directories run
                gguf_ok = ", ".join(a for s in SPECS if s.supported for a in s.gguf_archs)
                raise UserError(f"{where}: {what} is not supported, only its HF directories "
                                f"(GGUF architectures supported: {gguf_ok})")
        elif cfg.get("model_type"):
            what = f"model_type {cfg['model_type']!r}"
        elif cfg.get("architectures"):
            what = f"architectures {_show(cfg['architectures'])}"
        else:
            raise UserError(f"{where}: the config names no model_type or architectures, so the model "
                            f"family is unknown {also}")
        raise UserError(f"{where}: {what} is not supported {also}")
    if spec.refused:
        raise UserError(f"{where}: {spec.name} is a {spec.refused} model, which is not supported {also}")
    bad = unsupported_keys(spec, cfg)
    if cfg.get("lminspect_arch"):  # lminspect's own checkpoint: its engine wrote every other key itself
        bad = [b for b in bad if b.partition("=")[0] in spec.keys]
    if bad:
        raise UserError(f"{where}: {spec.name} with {', '.join(bad)} is not supported {also}")
    return spec


__all__ = ["ANY", "BOOKKEEPING", "FamilySpec", "SPECS", "check_family", "family_of", "gguf_family", "one_of",
           "none_or", "rope", "spec_named", "supported_names", "unset", "unsupported_keys"]
