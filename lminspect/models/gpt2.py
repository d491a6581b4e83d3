"""GPT-2 family: learned positions, pre-LayerNorm blocks, tanh-GeLU MLP, biases everywhere, tied head.

Canonical names: ``embed.tokens.weight``, ``embed.positions.weight``,
``layers.N.{attn_norm,attn.{q,k,v,o},mlp_norm,mlp.{up,down}}.{weight,bias}``, ``norm.{weight,bias}``.
HF's fused ``c_attn`` and Conv1D orientation are undone by the weight store, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lminspect.errors import UserError
from lminspect.models.common import LM, MLP, Attention, Block
from lminspect.models.llama import _first, _need


@dataclass
class GPT2Config:
    vocab_size: int = 50257  # tokens in the embedding / tied head
    dim: int = 768  # residual width (n_embd)
    n_layer: int = 12  # decoder blocks
    n_head: int = 12  # attention heads (head_dim = dim // n_head)
    ffn_dim: int = 3072  # MLP hidden width (n_inner, default 4 * dim)
    context_length: int = 1024  # n_positions: rows of the position embedding
    norm_eps: float = 1e-5  # LayerNorm epsilon (layer_norm_epsilon)
    act: str = "gelu_new"  # activation_function; gelu_new is the tanh approximation
    tie_embeddings: bool = True  # GPT-2 always ties the head to embed.tokens
    bos_token_id: int | None = None  # kept for export / the tokenizer
    eos_token_id: int | list[int] | None = None

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @classmethod
    def from_hf(cls, cfg: dict) -> GPT2Config:
        if cfg.get("scale_attn_by_inverse_layer_idx"):
            raise UserError("gpt2 config: scale_attn_by_inverse_layer_idx=true is not supported (expected false)")
        if cfg.get("scale_attn_weights") is False:
            raise UserError("gpt2 config: scale_attn_weights=false is not supported (expected true)")
        dim = int(_need(cfg, "gpt2", "n_embd", "hidden_size"))
        return cls(
            vocab_size=int(_need(cfg, "gpt2", "vocab_size")),
            dim=dim,
            n_layer=int(_need(cfg, "gpt2", "n_layer", "num_hidden_layers")),
            n_head=int(_need(cfg, "gpt2", "n_head", "num_attention_heads")),
            ffn_dim=int(_first(cfg, "n_inner", "intermediate_size", default=4 * dim)),
            context_length=int(_first(cfg, "n_positions", "max_position_embeddings", default=1024)),
            norm_eps=float(_first(cfg, "layer_norm_epsilon", default=1e-5)),
            act=str(_first(cfg, "activation_function", default="gelu_new")),
            tie_embeddings=True,
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_id=cfg.get("eos_token_id"),
        )

    def to_hf(self) -> dict:
        return {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": self.vocab_size,
            "n_embd": self.dim,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_inner": self.ffn_dim,
            "n_positions": self.context_length,
            "n_ctx": self.context_length,
            "layer_norm_epsilon": self.norm_eps,
            "activation_function": self.act,
            "tie_word_embeddings": True,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "torch_dtype": "float32",
        }


class GPT2(LM):
    """A GPT-2 decoder. ``GPT2(GPT2Config(...))`` is randomly initialised (nanoGPT-style)."""

    arch = "gpt2"

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.config = c = config
        if c.dim % c.n_head:
            raise UserError(f"gpt2 config: n_embd {c.dim} is not a multiple of n_head {c.n_head}")
        self._build(nn.LayerNorm(c.dim, eps=c.norm_eps), positions=True)

    def make_block(self, i: int) -> Block:
        """One decoder block; subclass and override to try a variant."""
        c = self.config
        return Block(
            nn.LayerNorm(c.dim, eps=c.norm_eps),
            Attention(c.dim, c.n_head, c.n_head, c.head_dim, bias=True),
            nn.LayerNorm(c.dim, eps=c.norm_eps),
            MLP(c.dim, c.ffn_dim, c.act, gated=False, bias=True),
        )

    def _embed(self, ids, start: int, rows=None):
        if rows is not None:  # per-row positions [B, T] (left-padded batch)
            return self.embed.tokens(ids) + self.embed.positions(rows)
        T = ids.shape[1]
        return self.embed.tokens(ids) + self.embed.positions.weight[start:start + T]
