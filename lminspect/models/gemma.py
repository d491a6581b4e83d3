"""Gemma 1, 2 and 3 (text): Llama's layout with Gemma's changes, exactly as transformers computes them.

* ``(1 + w)`` RMSNorm in float32 (``OffsetRMSNorm``); embeddings times ``sqrt(hidden)`` (rounded
  to the weights' dtype); GeGLU (tanh-GeLU gate).
* Scores scaled by ``query_pre_attn_scalar ** -0.5`` (Gemma 2/3).
* Gemma 2: attention scores soft-capped ``c * tanh(s / c)`` (``attn_logit_softcapping``) and the
  final logits too (``final_logit_softcapping``).
* Gemma 2/3: four norms per block: the attention and MLP outputs are normed (``attn_post_norm``,
  ``mlp_post_norm``) before the residual add; ``pre_feedforward_layernorm`` is the MLP's input norm.
* Gemma 2/3: ``layer_types`` alternate sliding-window and global attention; Gemma 3's sliding layers
  use their own RoPE base (``rope_local_base_freq``) and its global ones may scale RoPE linearly;
  Gemma 3 norms q and k per head (``q_norm``/``k_norm``, also ``(1 + w)``).

Canonical names as Llama plus ``layers.N.{attn_post_norm,mlp_post_norm,attn.q_norm,attn.k_norm}.weight``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lminspect.errors import UserError
from lminspect.models.common import MLP, Attention, Block
from lminspect.models.llama import _first, _need
from lminspect.models.rotary import OffsetRMSNorm, RotaryLM, check_window, refuse, rope_params

_VERSIONS = {"gemma": 1, "gemma2": 2, "gemma3_text": 3}
_CLASSES = {1: ("gemma", "GemmaForCausalLM"), 2: ("gemma2", "Gemma2ForCausalLM"),
            3: ("gemma3_text", "Gemma3ForCausalLM")}
LAYER_TYPES = ("full_attention", "sliding_attention")
# transformers' config-class defaults for the keys whose math matters, used when a config.json lacks them
_DEFAULTS = {
    1: {"num_key_value_heads": 16, "head_dim": 256},
    2: {"num_key_value_heads": 4, "head_dim": 256, "query_pre_attn_scalar": 256, "sliding_window": 4096,
        "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0},
    3: {"num_key_value_heads": 4, "head_dim": 256, "query_pre_attn_scalar": 256, "sliding_window": 4096,
        "attn_logit_softcapping": None, "final_logit_softcapping": None},
}


def _version(cfg: dict) -> int:
    mt = str(cfg.get("model_type") or "")
    if mt in _VERSIONS:
        return _VERSIONS[mt]
    for a in cfg.get("architectures") or []:
        for v, (_, cls) in _CLASSES.items():
            if a == cls:
                return v
    if mt == "gemma3" or "text_config" in cfg:
        raise UserError("gemma3 (the image-text Gemma3ForConditionalGeneration) is not supported "
                        "(expected the text model: model_type gemma3_text, Gemma3ForCausalLM)")
    raise UserError(f"not a Gemma config: model_type {mt!r} (expected gemma, gemma2 or gemma3_text)")


@dataclass
class GemmaConfig:
    version: int = 2  # 1, 2 or 3 (model_type gemma, gemma2, gemma3_text)
    vocab_size: int = 256000  # tokens in the embedding / head
    dim: int = 2304  # residual width (hidden_size); embeddings are scaled by sqrt(dim)
    n_layer: int = 26  # decoder blocks (num_hidden_layers)
    n_head: int = 8  # query heads (num_attention_heads)
    n_kv_head: int = 4  # key/value heads (num_key_value_heads)
    head_dim: int = 256  # per-head width (head_dim; often not dim // n_head)
    ffn_dim: int = 9216  # GeGLU hidden width (intermediate_size)
    norm_eps: float = 1e-6  # epsilon of every (1 + w) RMSNorm (rms_norm_eps)
    rope_theta: float = 10000.0  # RoPE base of the global layers
    rope_factor: float = 1.0  # linear RoPE scaling of the global layers (Gemma 3 4B+ use 8)
    local_rope_theta: float | None = None  # RoPE base of the sliding layers (Gemma 3); None: rope_theta
    context_length: int = 8192  # max_position_embeddings
    tie_embeddings: bool = True  # head shares embed.tokens.weight (tie_word_embeddings)
    attn_bias: bool = False  # biases on q/k/v/o (attention_bias)
    act: str = "gelu_pytorch_tanh"  # gate nonlinearity (hidden_activation; Gemma 1: hidden_act, gelu means tanh)
    query_pre_attn_scalar: float | None = None  # scores times its ** -0.5 (None: head_dim, Gemma 1)
    attn_softcap: float | None = None  # attention scores c * tanh(s / c) (attn_logit_softcapping, Gemma 2)
    final_softcap: float | None = None  # final logits c * tanh(z / c) (final_logit_softcapping)
    window: int | None = None  # sliding_window: a sliding layer sees this many positions, itself included
    layer_types: list[str] = field(default_factory=list)  # per layer, full_attention or sliding_attention
    bos_token_id: int | None = None  # kept for export / the tokenizer
    eos_token_id: int | list[int] | None = None

    @property
    def post_norms(self) -> bool:
        """Gemma 2/3: the four-norm block."""
        return self.version >= 2

    @classmethod
    def from_hf(cls, cfg: dict) -> GemmaConfig:
        """Read a HF ``config.json`` dict; values whose math is not implemented are refused."""
        v = _version(cfg)
        fam = _CLASSES[v][0]
        cfg = {**_DEFAULTS[v], **cfg}
        if cfg.get("use_bidirectional_attention"):
            refuse(fam, "use_bidirectional_attention", True, "false")
        dim = int(_need(cfg, fam, "hidden_size"))
        n_head = int(_need(cfg, fam, "num_attention_heads"))
        n_layer = int(_need(cfg, fam, "num_hidden_layers"))
        if v == 1:
            act = str(_first(cfg, "hidden_act", default="gelu_pytorch_tanh"))
            act = "gelu_pytorch_tanh" if act == "gelu" else act  # as transformers' GemmaConfig reads it
        else:
            act = str(_first(cfg, "hidden_activation", default="gelu_pytorch_tanh"))
        types: list[str] = []
        window = None
        local_theta = None
        if v >= 2:
            types = cfg.get("layer_types") or [
                "sliding_attention" if (i + 1) % (2 if v == 2 else int(cfg.get("sliding_window_pattern") or 6))
                else "full_attention" for i in range(n_layer)]
            if not isinstance(types, list) or len(types) != n_layer or any(t not in LAYER_TYPES for t in types):
                refuse(fam, "layer_types", types, f"{n_layer} of {', '.join(LAYER_TYPES)}")
            if "sliding_attention" in types:
                window = check_window(fam, cfg.get("sliding_window"))
                if window is None:
                    refuse(fam, "sliding_window", None, "a positive integer when layer_types has sliding layers")
        if v == 3:
            if cfg["attn_logit_softcapping"] is not None:  # transformers' Gemma 3 ignores it
                refuse(fam, "attn_logit_softcapping", cfg["attn_logit_softcapping"], "null")
            theta, factor, _ = rope_params(cfg, fam, float(cfg.get("rope_theta") or 1e6), "full_attention",
                                           scalings=("linear",))
            local_theta, _, _ = rope_params(cfg, fam, float(cfg.get("rope_local_base_freq") or 1e4),
                                            "sliding_attention")
        else:
            theta, factor, _ = rope_params(cfg, fam, float(cfg.get("rope_theta") or 1e4))
        scalar = cfg.get("query_pre_attn_scalar") if v >= 2 else None
        if v >= 2 and (isinstance(scalar, bool) or not isinstance(scalar, int | float) or scalar <= 0):
            refuse(fam, "query_pre_attn_scalar", scalar, "a positive number")
        return cls(
            version=v,
            vocab_size=int(_need(cfg, fam, "vocab_size")),
            dim=dim,
            n_layer=n_layer,
            n_head=n_head,
            n_kv_head=int(_need(cfg, fam, "num_key_value_heads")),
            head_dim=int(_need(cfg, fam, "head_dim")),
            ffn_dim=int(_need(cfg, fam, "intermediate_size")),
            norm_eps=float(_first(cfg, "rms_norm_eps", default=1e-6)),
            rope_theta=theta,
            rope_factor=factor,
            local_rope_theta=local_theta,
            context_length=int(_first(cfg, "max_position_embeddings", default=8192)),
            tie_embeddings=bool(_first(cfg, "tie_word_embeddings", default=True)),
            attn_bias=bool(_first(cfg, "attention_bias", default=False)),
            act=act,
            query_pre_attn_scalar=float(scalar) if scalar is not None else None,
            attn_softcap=float(cfg["attn_logit_softcapping"]) if v == 2 and cfg.get("attn_logit_softcapping") else None,
            final_softcap=float(cfg["final_logit_softcapping"]) if v >= 2 and cfg.get("final_logit_softcapping") else None,
            window=window,
            layer_types=list(types),
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_id=cfg.get("eos_token_id"),
        )

    def to_hf(self) -> dict:
        """A config.json dict transformers loads as the same model."""
        mt, cls = _CLASSES[self.version]
        out = {
            "architectures": [cls], "model_type": mt, "vocab_size": self.vocab_size, "hidden_size": self.dim,
            "num_hidden_layers": self.n_layer, "num_attention_heads": self.n_head,
            "num_key_value_heads": self.n_kv_head, "head_dim": self.head_dim, "intermediate_size": self.ffn_dim,
            "rms_norm_eps": self.norm_eps, "max_position_embeddings": self.context_length,
            "tie_word_embeddings": self.tie_embeddings, "attention_bias": self.attn_bias,
            "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id, "torch_dtype": "float32",
        }
        full = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_factor != 1.0:
            full = {"rope_type": "linear", "factor": self.rope_factor, "rope_theta": self.rope_theta}
        if self.version == 1:
            out.update(hidden_act=self.act, rope_theta=self.rope_theta, rope_parameters=full)
            return out
        scalar = self.query_pre_attn_scalar
        if scalar is not None and float(scalar).is_integer():
            scalar = int(scalar)  # transformers' config classes type it int
        out.update(hidden_activation=self.act, query_pre_attn_scalar=scalar,
                   final_logit_softcapping=self.final_softcap, sliding_window=self.window,
                   layer_types=list(self.layer_types))
        if self.version == 2:
            out.update(attn_logit_softcapping=self.attn_softcap, rope_theta=self.rope_theta, rope_parameters=full)
        else:
            local = {"rope_type": "default", "rope_theta": self.local_rope_theta or self.rope_theta}
            out.update(attn_logit_softcapping=None,
                       rope_parameters={"full_attention": full, "sliding_attention": local})
        return out


class Gemma(RotaryLM):
    """A Gemma 1/2/3 decoder. ``Gemma(GemmaConfig(...))`` is randomly initialised (norm weights 0)."""

    def __init__(self, config: GemmaConfig) -> None:
        super().__init__()
        self.config = c = config
        self.arch = _CLASSES[c.version][0].removesuffix("_text")
        if c.n_head % c.n_kv_head:
            raise UserError(f"{self.arch} config: {c.n_head} heads are not a multiple of {c.n_kv_head} kv heads")
        self.rotary_dim, self.rope_theta, self.rope_factor = c.head_dim, c.rope_theta, c.rope_factor
        self.window = c.window
        if c.local_rope_theta is not None and (c.local_rope_theta != c.rope_theta or c.rope_factor != 1.0):
            self.local_theta = c.local_rope_theta
        self.logit_softcap = c.final_softcap
        self._build(OffsetRMSNorm(c.dim, c.norm_eps))

    def make_block(self, i: int) -> Block:
        """One decoder block; subclass and override to try a variant."""
        c = self.config
        attn = Attention(c.dim, c.n_head, c.n_kv_head, c.head_dim, bias=c.attn_bias)
        if c.query_pre_attn_scalar is not None:
            attn.scale = c.query_pre_attn_scalar ** -0.5
        attn.softcap = c.attn_softcap
        if c.layer_types and c.layer_types[i] == "sliding_attention":
            attn.window = c.window
        if c.version == 3:
            attn.q_norm, attn.k_norm = OffsetRMSNorm(c.head_dim, c.norm_eps), OffsetRMSNorm(c.head_dim, c.norm_eps)
        block = Block(OffsetRMSNorm(c.dim, c.norm_eps), attn, OffsetRMSNorm(c.dim, c.norm_eps),
                      MLP(c.dim, c.ffn_dim, c.act, gated=True, bias=False))
        if c.post_norms:
            block.attn_post_norm = OffsetRMSNorm(c.dim, c.norm_eps)
            block.mlp_post_norm = OffsetRMSNorm(c.dim, c.norm_eps)
        return block

    def _embed(self, ids: torch.Tensor, start: int, rows=None) -> torch.Tensor:
        w = self.embed.tokens.weight
        return self.embed.tokens(ids) * torch.tensor(self.config.dim ** 0.5, device=w.device).to(w.dtype)


__all__ = ["Gemma", "GemmaConfig"]
