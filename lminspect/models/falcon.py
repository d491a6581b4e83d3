"""Falcon family, RW layout (falcon-rw-1b): ALiBi, LayerNorm, exact GeLU MLP, biases, tied head.

Also handles the simple variants that only change wiring: ``parallel_attn`` (attention and MLP
read one norm; no ``mlp_norm``), ``multi_query`` (one KV head) and rotary instead of ALiBi.
``new_decoder_architecture`` (Falcon-40B/180B style) is refused.
Canonical names as Llama minus ``mlp.gate``, plus biases; the fused ``query_key_value`` is split
by the weight store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from lminspect.errors import UserError
from lminspect.models.common import LM, MLP, Attention, Block, alibi_table, causal_bias, rope_tables
from lminspect.models.llama import _first, _need, rope_theta_of


@dataclass
class FalconConfig:
    vocab_size: int = 50304  # tokens in the embedding / head
    dim: int = 2048  # residual width (hidden_size)
    n_layer: int = 24  # decoder blocks
    n_head: int = 32  # query heads (head_dim = dim // n_head)
    multi_query: bool = False  # one shared KV head (Falcon-7B); RW models have false
    alibi: bool = True  # ALiBi position bias; false means rotary
    parallel_attn: bool = False  # attention and MLP in parallel off one LayerNorm
    bias: bool = True  # biases on every linear
    ffn_dim: int = 8192  # MLP hidden width (ffn_hidden_size, default 4 * dim)
    norm_eps: float = 1e-5  # LayerNorm epsilon (layer_norm_epsilon)
    act: str = "gelu"  # exact GeLU
    rope_theta: float = 10000.0  # only used when alibi is false
    context_length: int = 2048  # max_position_embeddings (ALiBi could go longer; we do not)
    tie_embeddings: bool = True  # head shares embed.tokens.weight
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def n_kv_head(self) -> int:
        return 1 if self.multi_query else self.n_head

    @classmethod
    def from_hf(cls, cfg: dict) -> FalconConfig:
        if cfg.get("new_decoder_architecture"):
            raise UserError("falcon config: new_decoder_architecture=true is not supported "
                            "(expected the RW / 7B layout with new_decoder_architecture=false)")
        dim = int(_need(cfg, "falcon", "hidden_size", "n_embd"))
        alibi = bool(_first(cfg, "alibi", default=False))
        return cls(
            vocab_size=int(_need(cfg, "falcon", "vocab_size")),
            dim=dim,
            n_layer=int(_need(cfg, "falcon", "num_hidden_layers", "n_layer")),
            n_head=int(_need(cfg, "falcon", "num_attention_heads", "n_head")),
            multi_query=bool(_first(cfg, "multi_query", default=True)),
            alibi=alibi,
            parallel_attn=bool(_first(cfg, "parallel_attn", default=True)),
            bias=bool(_first(cfg, "bias", default=False)),
            ffn_dim=int(_first(cfg, "ffn_hidden_size", default=4 * dim)),
            norm_eps=float(_first(cfg, "layer_norm_epsilon", default=1e-5)),
            act=str(_first(cfg, "activation", default="gelu")),
            rope_theta=10000.0 if alibi else rope_theta_of(cfg),
            context_length=int(_first(cfg, "max_position_embeddings", default=2048)),
            tie_embeddings=bool(_first(cfg, "tie_word_embeddings", default=True)),
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_id=cfg.get("eos_token_id"),
        )

    def to_hf(self) -> dict:
        return {
            "architectures": ["FalconForCausalLM"],
            "model_type": "falcon",
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "num_hidden_layers": self.n_layer,
            "num_attention_heads": self.n_head,
            "multi_query": self.multi_query,
            "alibi": self.alibi,
            "parallel_attn": self.parallel_attn,
            "new_decoder_architecture": False,
            "bias": self.bias,
            "ffn_hidden_size": self.ffn_dim,
            "layer_norm_epsilon": self.norm_eps,
            "activation": self.act,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.context_length,
            "tie_word_embeddings": self.tie_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "torch_dtype": "float32",
        }


class Falcon(LM):
    """A Falcon(-RW) decoder. ``Falcon(FalconConfig(...))`` is randomly initialised (nanoGPT-style)."""

    arch = "falcon"

    def __init__(self, config: FalconConfig) -> None:
        super().__init__()
        self.config = c = config
        if c.dim % c.n_head:
            raise UserError(f"falcon config: hidden_size {c.dim} is not a multiple of {c.n_head} heads")
        self._build(nn.LayerNorm(c.dim, eps=c.norm_eps))

    def make_block(self, i: int) -> Block:
        """One decoder block; subclass and override to try a variant."""
        c = self.config
        return Block(
            nn.LayerNorm(c.dim, eps=c.norm_eps),
            Attention(c.dim, c.n_head, c.n_kv_head, c.head_dim, bias=c.bias),
            None if c.parallel_attn else nn.LayerNorm(c.dim, eps=c.norm_eps),
            MLP(c.dim, c.ffn_dim, c.act, gated=False, bias=c.bias),
            parallel=c.parallel_attn,
        )

    def _make_buffers(self) -> None:
        """Derived tables (not in state_dict): ALiBi bias [n_head, context] / sqrt(head_dim), or RoPE."""
        c = self.config
        if c.alibi:
            self.register_buffer("alibi", alibi_table(c.n_head, c.context_length) / math.sqrt(c.head_dim),
                                 persistent=False)
        else:
            cos, sin = rope_tables(c.head_dim, c.rope_theta, c.context_length)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)

    def _key_bias(self, positions):
        if not self.config.alibi:
            return None
        return self.alibi[:, positions].permute(1, 0, 2)[:, :, None, :].to(self.dtype)  # [B, H, 1, T]

    def _extras(self, start: int, T: int, L: int, rows=None):
        if not self.config.alibi:
            if rows is not None:  # per-row positions [B, T] -> tables [B, 1, T, D]
                return self.rope_cos[rows][:, None], self.rope_sin[rows][:, None], None
            return self.rope_cos[start:start + T], self.rope_sin[start:start + T], None
        # ALiBi biases key columns; a row's constant shift from left padding cancels in the softmax
        H = self.config.n_head
        bias = self.alibi[:, :L].view(1, H, 1, L) + causal_bias(start, T, L, self.alibi.device)  # [1,H,T,L]
        return None, None, bias.to(self.dtype)


__all__ = ["Falcon", "FalconConfig"]
