"""Llama family (also SmolLM2, TinyLlama, ...): RoPE, grouped-query attention, SwiGLU MLP, RMSNorm.

Shapes are commented as [batch, time, channels]. Parameter names are the canonical ones:
``embed.tokens.weight``, ``layers.N.{attn_norm,attn.{q,k,v,o},mlp_norm,mlp.{gate,up,down}}.*``,
``norm.weight`` and ``head.weight`` (absent when the head is tied to the embedding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lminspect.errors import UserError
from lminspect.models.common import LM, MLP, Attention, Block, RMSNorm, rope_tables


def _first(d: dict, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return default


def rope_theta_of(cfg: dict, default: float = 10000.0) -> float:
    """RoPE base from ``rope_theta`` (transformers 4) or ``rope_parameters.rope_theta`` (5);
    any scaling type other than default is refused rather than silently ignored."""
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    for src in (params, scaling):
        kind = src.get("rope_type", src.get("type", "default")) if isinstance(src, dict) else "default"
        if kind not in (None, "default"):
            raise UserError(f"unsupported rope scaling type {kind!r} in config (expected 'default', i.e. none)")
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

    @classmethod
    def from_hf(cls, cfg: dict) -> LlamaConfig:
        """Read a HF ``config.json`` dict (transformers 4 or 5 spelling)."""
        dim = int(_need(cfg, "llama", "hidden_size", "n_embd", "dim"))
        n_head = int(_need(cfg, "llama", "num_attention_heads", "n_head"))
        return cls(
            vocab_size=int(_need(cfg, "llama", "vocab_size")),
            dim=dim,
            n_layer=int(_need(cfg, "llama", "num_hidden_layers", "n_layer")),
            n_head=n_head,
            n_kv_head=int(_first(cfg, "num_key_value_heads", default=n_head)),
            head_dim=int(_first(cfg, "head_dim", default=dim // n_head)),
            ffn_dim=int(_need(cfg, "llama", "intermediate_size")),
            norm_eps=float(_first(cfg, "rms_norm_eps", default=1e-6)),
            rope_theta=rope_theta_of(cfg),
            context_length=int(_first(cfg, "max_position_embeddings", default=2048)),
            tie_embeddings=bool(_first(cfg, "tie_word_embeddings", default=False)),
            attn_bias=bool(_first(cfg, "attention_bias", default=False)),
            mlp_bias=bool(_first(cfg, "mlp_bias", default=False)),
            act=str(_first(cfg, "hidden_act", default="silu")),
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_id=cfg.get("eos_token_id"),
        )

    def to_hf(self) -> dict:
        """A HF ``LlamaForCausalLM`` config.json dict (loads in transformers 4 and 5)."""
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
        self._build(RMSNorm(c.dim, c.norm_eps))

    def make_block(self, i: int) -> Block:
        """One decoder block; subclass and override to try a variant."""
        c = self.config
        return Block(
            RMSNorm(c.dim, c.norm_eps),
            Attention(c.dim, c.n_head, c.n_kv_head, c.head_dim, bias=c.attn_bias),
            RMSNorm(c.dim, c.norm_eps),
            MLP(c.dim, c.ffn_dim, c.act, gated=True, bias=c.mlp_bias),
        )

    def _make_buffers(self) -> None:
        """Derived tables (not parameters, not in state_dict): RoPE cos/sin [context, head_dim]."""
        c = self.config
        cos, sin = rope_tables(c.head_dim, c.rope_theta, c.context_length)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def _extras(self, start: int, T: int, L: int, rows=None):
        if rows is not None:  # per-row positions [B, T] -> tables [B, 1, T, D]
            return self.rope_cos[rows][:, None], self.rope_sin[rows][:, None], None
        return self.rope_cos[start:start + T], self.rope_sin[start:start + T], None


__all__ = ["Llama", "LlamaConfig", "rope_theta_of"]
