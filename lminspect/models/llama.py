"""Llama family (also SmolLM2, TinyLlama, ...): RoPE, grouped-query attention, SwiGLU MLP, RMSNorm.

The same engine runs the families that differ from Llama by a few config fields (weights/families.py
lists their keys): Llama 3.x rope scalings, Qwen 2/2.5 (q/k/v biases), Qwen 3 (per-head q/k norms),
Mistral (sliding window), Granite (multipliers), SmolLM3 (layers without RoPE), OLMo 2 (post-norms,
q/k norms over the whole projection). ``LlamaConfig.family`` remembers which, so ``to_hf`` writes it back.

Shapes are commented as [batch, time, channels]. Parameter names are the canonical ones:
``embed.tokens.weight``, ``layers.N.{attn_norm,attn.{q,k,v,o},mlp_norm,mlp.{gate,up,down}}.*``,
``norm.weight`` and ``head.weight`` (absent when the head is tied to the embedding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lminspect.errors import UserError
from lminspect.models.common import LM, MLP, Attention, Block, RMSNorm, rope_tables
from lminspect.models.rope import rope_scaling_of, scaled_rope_tables


def _first(d: dict, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return default


def rope_theta_of(cfg: dict, default: float = 10000.0) -> float:
    """RoPE base from ``rope_theta`` (transformers 4) or ``rope_parameters.rope_theta`` (5);
    any scaling type other than default is refused rather than silently ignored."""
    rope_scaling_of(cfg)
    params = cfg.get("rope_parameters") or {}
    return float(_first(params if isinstance(params, dict) else {}, "rope_theta",
                        default=cfg.get("rope_theta", default)))


def _need(cfg: dict, family: str, *keys: str) -> Any:
    v = _first(cfg, *keys)
    if v is None:
        raise UserError(f"{family} config lacks {keys[0]!r} (expected an integer)")
    return v


@dataclass
class LlamaConfig:
    vocab_size: int = 32000  # tokens in the embedding / head
    dim: int = 576  # residual width (hidden_size)
    n_layer: int = 30  # decoder blocks (num_hidden_layers)
    n_head: int = 9  # query heads (num_attention_heads)
    n_kv_head: int = 3  # key/value heads; < n_head is grouped-query attention
    head_dim: int = 64  # per-head width; usually dim // n_head
    ffn_dim: int = 1536  # SwiGLU hidden width (intermediate_size)
    norm_eps: float = 1e-5  # RMSNorm epsilon
    rope_theta: float = 10000.0  # RoPE base; larger = slower rotation, longer context
    context_length: int = 2048  # max_position_embeddings: longest sequence we accept
    tie_embeddings: bool = False  # head shares embed.tokens.weight (no head.weight)
    attn_bias: bool = False  # biases on q/k/v/o (attention_bias)
    mlp_bias: bool = False  # biases on gate/up/down (mlp_bias)
    act: str = "silu"  # gate nonlinearity (hidden_act)
    bos_token_id: int | None = None  # kept for export / the tokenizer
    eos_token_id: int | list[int] | None = None
    family: str = "llama"  # the HF family it was read from (model_type); to_hf writes that family back
    rope_scaling: dict | None = None  # rope_type (linear / dynamic / yarn / llama3) + its parameters; None: plain
    o_bias: bool | None = None  # bias on attn.o; None: as attn_bias (Qwen2 has q/k/v biases and none on o)
    qk_norm: str = ""  # "" none, "head": RMSNorm per head on q and k (Qwen3), "full": over the projection (OLMo 2)
    post_norms: bool = False  # OLMo 2: RMSNorm on each branch output, no norm before the branches
    sliding_window: int | None = None  # keys a windowed layer sees (the query's own included); None: no window
    window_layers: list[int] | None = None  # the windowed layers (None: all, when sliding_window is set)
    no_rope_layers: list[int] | None = None  # SmolLM3: per layer 1 = RoPE, 0 = none (None: RoPE everywhere)
    embedding_multiplier: float = 1.0  # Granite: embeddings are multiplied by this
    residual_multiplier: float = 1.0  # Granite: each branch output is multiplied by this before the add
    attention_multiplier: float | None = None  # Granite: attention score scale (None: 1/sqrt(head_dim))
    logits_scaling: float = 1.0  # Granite: logits are divided by this

    @classmethod
    def from_hf(cls, cfg: dict) -> LlamaConfig:
        """Read a HF ``config.json`` dict (transformers 4 or 5 spelling) of any family this engine runs."""
        from lminspect.models.llama_families import family_fields

        dim = int(_need(cfg, "llama", "hidden_size", "n_embd", "dim"))
        n_head = int(_need(cfg, "llama", "num_attention_heads", "n_head"))
        fields = dict(
            vocab_size=int(_need(cfg, "llama", "vocab_size")),
            dim=dim,
            n_layer=int(_need(cfg, "llama", "num_hidden_layers", "n_layer")),
            n_head=n_head,
            n_kv_head=int(_first(cfg, "num_key_value_heads", default=n_head)),
            head_dim=int(_first(cfg, "head_dim", default=dim // n_head)),
            ffn_dim=int(_need(cfg, "llama", "intermediate_size")),
            norm_eps=float(_first(cfg, "rms_norm_eps", default=1e-6)),
            rope_theta=float(_first(cfg.get("rope_parameters") or {}, "rope_theta",
                                    default=cfg.get("rope_theta", 10000.0))),
            context_length=int(_first(cfg, "max_position_embeddings", default=2048)),
            tie_embeddings=bool(_first(cfg, "tie_word_embeddings", default=False)),
            attn_bias=bool(_first(cfg, "attention_bias", default=False)),
            mlp_bias=bool(_first(cfg, "mlp_bias", default=False)),
            act=str(_first(cfg, "hidden_act", default="silu")),
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_id=cfg.get("eos_token_id"),
        )
        return cls(**{**fields, **family_fields(cfg)})

    def to_hf(self) -> dict:
        """A HF config.json dict of the config's family (loads in transformers 4 and 5)."""
        from lminspect.models.llama_families import family_hf

        return family_hf(self, self._llama_hf())

    def _llama_hf(self) -> dict:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "num_hidden_layers": self.n_layer,
            "num_attention_heads": self.n_head,
            "num_key_value_heads": self.n_kv_head,
            "head_dim": self.head_dim,
            "intermediate_size": self.ffn_dim,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "max_position_embeddings": self.context_length,
            "tie_word_embeddings": self.tie_embeddings,
            "attention_bias": self.attn_bias,
            "mlp_bias": self.mlp_bias,
            "hidden_act": self.act,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "torch_dtype": "float32",
        }


class Llama(LM):
    """A Llama decoder. ``Llama(LlamaConfig(...))`` is randomly initialised (nanoGPT-style)."""

    arch = "llama"

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = c = config
        if c.n_head % c.n_kv_head:
            raise UserError(f"llama config: {c.n_head} heads are not a multiple of {c.n_kv_head} kv heads")
        self.window = c.sliding_window
        self.arch = c.family  # "qwen2", ...: what checkpoints and export call it
        self._build(RMSNorm(c.dim, c.norm_eps))

    def make_block(self, i: int) -> Block:
        """One decoder block; subclass and override to try a variant."""
        c = self.config
        windowed = c.sliding_window is not None and (c.window_layers is None or i in c.window_layers)
        attn = Attention(c.dim, c.n_head, c.n_kv_head, c.head_dim, bias=c.attn_bias, o_bias=c.o_bias,
                         rope=c.no_rope_layers is None or bool(c.no_rope_layers[i]), scale=c.attention_multiplier,
                         window=c.sliding_window if windowed else None)
        if c.qk_norm:  # per head: [head_dim]; full: the whole q / k projection
            full = c.qk_norm == "full"
            attn.q_norm = RMSNorm(c.n_head * c.head_dim if full else c.head_dim, c.norm_eps)
            attn.k_norm = RMSNorm(c.n_kv_head * c.head_dim if full else c.head_dim, c.norm_eps)
            attn.qk_norm_full = full
        post = c.post_norms  # OLMo 2: the norms move after the branches
        block = Block(nn.Identity() if post else RMSNorm(c.dim, c.norm_eps), attn,
                      nn.Identity() if post else RMSNorm(c.dim, c.norm_eps),
                      MLP(c.dim, c.ffn_dim, c.act, gated=True, bias=c.mlp_bias))
        if post:
            block.attn_post_norm, block.mlp_post_norm = RMSNorm(c.dim, c.norm_eps), RMSNorm(c.dim, c.norm_eps)
        block.residual_scale = c.residual_multiplier
        return block

    def _embed(self, ids: torch.Tensor, start: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed.tokens(ids)
        return x * self.config.embedding_multiplier if self.config.embedding_multiplier != 1.0 else x

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        y = super()._logits(x)
        return y / self.config.logits_scaling if self.config.logits_scaling != 1.0 else y

    @property
    def logit_scale(self) -> float:
        """What the head's output is multiplied by (Granite divides it by logits_scaling)."""
        return 1.0 / self.config.logits_scaling

    def _make_buffers(self) -> None:
        """Derived tables (not parameters, not in state_dict): RoPE cos/sin [context, head_dim]."""
        c = self.config
        if c.rope_scaling:
            cos, sin = scaled_rope_tables(c.head_dim, c.rope_theta, c.context_length, c.rope_scaling, c.context_length)
        else:
            cos, sin = rope_tables(c.head_dim, c.rope_theta, c.context_length)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def _extras(self, start: int, T: int, L: int, rows=None):
        if rows is not None:  # per-row positions [B, T] -> tables [B, 1, T, D]
            return self.rope_cos[rows][:, None], self.rope_sin[rows][:, None], None
        return self.rope_cos[start:start + T], self.rope_sin[start:start + T], None


__all__ = ["Llama", "LlamaConfig", "rope_scaling_of", "rope_theta_of"]
