"""Phi-3 (also Phi-3.5 / Phi-4 checkpoints without long-context RoPE): Llama's math with fused
``qkv_proj`` and ``gate_up_proj`` (split into the canonical q/k/v and gate/up by the weight store,
fused again by export), optional partial rotary and a sliding window on every layer.

``longrope`` / ``su`` / ``yarn`` RoPE (the 128k-context models) is refused, not approximated.
"""

from __future__ import annotations

from dataclasses import dataclass

from lminspect.errors import UserError
from lminspect.models.common import MLP, Attention, Block, RMSNorm
from lminspect.models.llama import _first, _need
from lminspect.models.rotary import RotaryLM, check_window, refuse, rope_params


def rotary_dim_of(cfg: dict, params: dict, head_dim: int, family: str, default: float = 1.0,
                  odd_ok: bool = True) -> int:
    """Channels per head that RoPE turns: ``int(head_dim * factor)``, the factor from transformers 5's
    ``rope_parameters`` or 4's top level (``partial_rotary_factor``, GPT-NeoX ``rotary_pct``). An odd
    count turns one more channel (transformers splits where its table ends, as ``apply_rope`` does);
    ``odd_ok=False`` (StableLM, which splits at the count itself) refuses it."""
    f = _first(params, "partial_rotary_factor", default=_first(cfg, "partial_rotary_factor", "rotary_pct",
                                                                  default=default))
    f = float(f)
    if not 0.0 < f <= 1.0:
        raise UserError(f"partial_rotary_factor = {f!r}; must be in (0, 1]")
    dim = int(head_dim * f)
    if (dim % 2 and not odd_ok) or dim < 1:
        refuse(family, "partial_rotary_factor", f, f"a factor that turns an even number of the {head_dim} channels")
    return dim  # (an odd dim's tables come out one wider: ceil(dim / 2) frequencies, twice)


@dataclass
class Phi3Config:
    vocab_size: int = 32064  # tokens in the embedding / head
    dim: int = 3072  # residual width (hidden_size)
    n_layer: int = 32  # decoder blocks (num_hidden_layers)
    n_head: int = 32  # query heads (num_attention_heads)
    n_kv_head: int = 32  # key/value heads (num_key_value_heads)
    head_dim: int = 96  # per-head width (hidden_size // num_attention_heads)
    rotary_dim: int = 96  # channels per head RoPE turns: int(head_dim * partial_rotary_factor)
    ffn_dim: int = 8192  # SwiGLU hidden width (intermediate_size; gate_up_proj holds 2x)
    norm_eps: float = 1e-5  # RMSNorm epsilon (rms_norm_eps)
    rope_theta: float = 10000.0  # RoPE base
    window: int | None = None  # sliding_window on every layer (Phi-3-mini: 2047); None: full attention
    context_length: int = 4096  # max_position_embeddings
    tie_embeddings: bool = False  # head shares embed.tokens.weight
    act: str = "silu"  # gate nonlinearity (hidden_act)
    bos_token_id: int | None = None  # kept for export / the tokenizer
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None  # kept for export: Phi3Config's default (32000) must fit the vocabulary

    @classmethod
    def from_hf(cls, cfg: dict) -> Phi3Config:
        """Read a HF ``config.json`` dict; values whose math is not implemented are refused."""
        dim = int(_need(cfg, "phi3", "hidden_size"))
        n_head = int(_need(cfg, "phi3", "num_attention_heads"))
        theta, _, params = rope_params(cfg, "phi3", float(cfg.get("rope_theta") or 1e4))
        head_dim = int(_first(cfg, "head_dim", default=dim // n_head))
        return cls(
            vocab_size=int(_need(cfg, "phi3", "vocab_size")),
            dim=dim,
            n_layer=int(_need(cfg, "phi3", "num_hidden_layers")),
            n_head=n_head,
            n_kv_head=int(_first(cfg, "num_key_value_heads", default=n_head)),
            head_dim=head_dim,
            rotary_dim=rotary_dim_of(cfg, params, head_dim, "phi3"),
            ffn_dim=int(_need(cfg, "phi3", "intermediate_size")),
            norm_eps=float(_first(cfg, "rms_norm_eps", default=1e-5)),
            rope_theta=theta,
            window=check_window("phi3", cfg.get("sliding_window")),
            context_length=int(_first(cfg, "max_position_embeddings", default=4096)),
            tie_embeddings=bool(_first(cfg, "tie_word_embeddings", default=False)),
            act=str(_first(cfg, "hidden_act", default="silu")),
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_id=cfg.get("eos_token_id"),
            pad_token_id=cfg.get("pad_token_id"),
        )

    def to_hf(self) -> dict:
        """A ``Phi3ForCausalLM`` config.json dict."""
        if self.head_dim * self.n_head != self.dim:
            refuse("phi3", "head_dim", self.head_dim, f"hidden_size / num_attention_heads = {self.dim // self.n_head}")
        factor = self.rotary_dim / self.head_dim
        return {
            "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "vocab_size": self.vocab_size,
            "hidden_size": self.dim, "num_hidden_layers": self.n_layer, "num_attention_heads": self.n_head,
            "num_key_value_heads": self.n_kv_head, "intermediate_size": self.ffn_dim, "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta, "partial_rotary_factor": factor,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta, "partial_rotary_factor": factor},
            "sliding_window": self.window, "max_position_embeddings": self.context_length,
            "tie_word_embeddings": self.tie_embeddings, "hidden_act": self.act, "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id, "pad_token_id": self.pad_token_id, "torch_dtype": "float32",
        }


class Phi3(RotaryLM):
    """A Phi-3 decoder. ``Phi3(Phi3Config(...))`` is randomly initialised (nanoGPT-style)."""

    arch = "phi3"

    def __init__(self, config: Phi3Config) -> None:
        super().__init__()
        self.config = c = config
        if c.n_head % c.n_kv_head:
            raise UserError(f"phi3 config: {c.n_head} heads are not a multiple of {c.n_kv_head} kv heads")
        self.rotary_dim, self.rope_theta, self.window = c.rotary_dim, c.rope_theta, c.window
        self._build(RMSNorm(c.dim, c.norm_eps))

    def make_block(self, i: int) -> Block:
        """One decoder block; subclass and override to try a variant."""
        c = self.config
        attn = Attention(c.dim, c.n_head, c.n_kv_head, c.head_dim, bias=False, window=c.window)
        return Block(RMSNorm(c.dim, c.norm_eps), attn, RMSNorm(c.dim, c.norm_eps),
                     MLP(c.dim, c.ffn_dim, c.act, gated=True, bias=False))


__all__ = ["Phi3", "Phi3Config", "rotary_dim_of"]
