"""GPT-NeoX (Pythia) and StableLM: LayerNorm blocks with partial rotary, serial or parallel residual.

* GPT-NeoX: biases on every linear (``attention_bias`` for q/k/v/o), a GeLU MLP, two LayerNorms
  per block even in the parallel layout (``x + attn(ln1(x)) + mlp(ln2(x))``), and a fused
  ``query_key_value`` laid out ``[n_head, 3, head_dim]`` (Falcon-RW's; split by the weight store).
* StableLM: SwiGLU without biases, optional q/k/v biases (``use_qkv_bias``), grouped KV heads,
  optional per-head LayerNorm of q and k (``qk_layernorm``) and the parallel layout off one
  LayerNorm (``use_parallel_residual``: ``x + attn(ln(x)) + mlp(ln(x))``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lminspect.errors import UserError
from lminspect.models.common import MLP, Attention, Block
from lminspect.models.llama import _first, _need
from lminspect.models.phi3 import rotary_dim_of
from lminspect.models.rotary import HeadLayerNorm, RotaryLM, rope_params


def _shared_fields(cfg: dict, family: str, act: str, context: int, n_head: int, dim: int) -> dict:
    """The config.json fields GPT-NeoX and StableLM read alike (same keys, their own defaults)."""
    if dim % n_head:
        raise UserError(f"{family} config: hidden_size {dim} is not a multiple of {n_head} heads")
    return dict(
        vocab_size=int(_need(cfg, family, "vocab_size")),
        dim=dim,
        n_layer=int(_need(cfg, family, "num_hidden_layers")),
        n_head=n_head,
        ffn_dim=int(_need(cfg, family, "intermediate_size")),
        norm_eps=float(_first(cfg, "layer_norm_eps", default=1e-5)),
        context_length=int(_first(cfg, "max_position_embeddings", default=context)),
        tie_embeddings=bool(_first(cfg, "tie_word_embeddings", default=False)),
        act=str(_first(cfg, "hidden_act", default=act)),
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_id=cfg.get("eos_token_id"),
    )



@dataclass
class GPTNeoXConfig:
    vocab_size: int = 50432  # tokens in the embedding / head
    dim: int = 512  # residual width (hidden_size)
    n_layer: int = 6  # decoder blocks (num_hidden_layers)
    n_head: int = 8  # attention heads (head_dim = dim // n_head)
    rotary_dim: int = 16  # channels per head RoPE turns: int(head_dim * rotary_pct)
    ffn_dim: int = 2048  # MLP hidden width (intermediate_size)
    norm_eps: float = 1e-5  # LayerNorm epsilon (layer_norm_eps)
    rope_theta: float = 10000.0  # RoPE base (rotary_emb_base)
    context_length: int = 2048  # max_position_embeddings
    parallel: bool = True  # use_parallel_residual: attention and MLP both read the block input
    attn_bias: bool = True  # biases on query_key_value and dense (attention_bias); the MLP always has them
    tie_embeddings: bool = False  # head (embed_out) shares embed_in
    act: str = "gelu"  # MLP nonlinearity (hidden_act)
    bos_token_id: int | None = None  # kept for export / the tokenizer
    eos_token_id: int | list[int] | None = None

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @classmethod
    def from_hf(cls, cfg: dict) -> GPTNeoXConfig:
        """Read a HF ``config.json`` dict (transformers 4 or 5 spelling)."""
        dim = int(_need(cfg, "gptneox", "hidden_size"))
        n_head = int(_need(cfg, "gptneox", "num_attention_heads"))
        shared = _shared_fields(cfg, "gptneox", "gelu", 2048, n_head, dim)
        theta, _, params = rope_params(cfg, "gptneox", float(cfg.get("rotary_emb_base") or cfg.get("rope_theta")
                                                             or 1e4))
        return cls(
            **shared,
            rotary_dim=rotary_dim_of(cfg, params, dim // n_head, "gptneox", 0.25),
            rope_theta=theta,
            parallel=bool(_first(cfg, "use_parallel_residual", default=True)),
            attn_bias=bool(_first(cfg, "attention_bias", default=True)),
        )

    def to_hf(self) -> dict:
        """A ``GPTNeoXForCausalLM`` config.json dict (transformers 4 and 5 spellings)."""
        pct = self.rotary_dim / self.head_dim
        return {
            "architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "vocab_size": self.vocab_size,
            "hidden_size": self.dim, "num_hidden_layers": self.n_layer, "num_attention_heads": self.n_head,
            "intermediate_size": self.ffn_dim, "layer_norm_eps": self.norm_eps, "rotary_pct": pct,
            "rotary_emb_base": self.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta, "partial_rotary_factor": pct},
            "max_position_embeddings": self.context_length, "use_parallel_residual": self.parallel,
            "attention_bias": self.attn_bias, "tie_word_embeddings": self.tie_embeddings, "hidden_act": self.act,
            "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id, "torch_dtype": "float32",
        }


class GPTNeoX(RotaryLM):
    """A GPT-NeoX / Pythia decoder. ``GPTNeoX(GPTNeoXConfig(...))`` is randomly initialised."""

    arch = "gptneox"

    def __init__(self, config: GPTNeoXConfig) -> None:
        super().__init__()
        self.config = c = config
        self.rotary_dim, self.rope_theta = c.rotary_dim, c.rope_theta
        self._build(nn.LayerNorm(c.dim, eps=c.norm_eps))

    def make_block(self, i: int) -> Block:
        """One decoder block; subclass and override to try a variant."""
        c = self.config
        return Block(nn.LayerNorm(c.dim, eps=c.norm_eps),
                     Attention(c.dim, c.n_head, c.n_head, c.head_dim, bias=c.attn_bias),
                     nn.LayerNorm(c.dim, eps=c.norm_eps),  # its own norm in the parallel layout too
                     MLP(c.dim, c.ffn_dim, c.act, gated=False, bias=True), parallel=c.parallel)


@dataclass
class StableLMConfig:
    vocab_size: int = 50304  # tokens in the embedding / head
    dim: int = 2560  # residual width (hidden_size)
    n_layer: int = 32  # decoder blocks (num_hidden_layers)
    n_head: int = 32  # query heads (head_dim = dim // n_head)
    n_kv_head: int = 32  # key/value heads (num_key_value_heads)
    rotary_dim: int = 20  # channels per head RoPE turns: int(head_dim * partial_rotary_factor)
    ffn_dim: int = 6912  # SwiGLU hidden width (intermediate_size)
    norm_eps: float = 1e-5  # LayerNorm epsilon (layer_norm_eps), also of the q/k norms
    rope_theta: float = 10000.0  # RoPE base
    context_length: int = 4096  # max_position_embeddings
    qkv_bias: bool = False  # biases on q/k/v (use_qkv_bias); o never has one
    qk_norm: bool = False  # per-head LayerNorm (no bias) on q and k before RoPE (qk_layernorm)
    parallel: bool = False  # use_parallel_residual: attention and MLP read one LayerNorm of the input
    tie_embeddings: bool = False  # head shares embed.tokens.weight
    act: str = "silu"  # gate nonlinearity (hidden_act)
    bos_token_id: int | None = None  # kept for export / the tokenizer
    eos_token_id: int | list[int] | None = None

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @classmethod
    def from_hf(cls, cfg: dict) -> StableLMConfig:
        """Read a HF ``config.json`` dict (transformers 4 or 5 spelling)."""
        dim = int(_need(cfg, "stablelm", "hidden_size"))
        n_head = int(_need(cfg, "stablelm", "num_attention_heads"))
        shared = _shared_fields(cfg, "stablelm", "silu", 4096, n_head, dim)
        theta, _, params = rope_params(cfg, "stablelm", float(cfg.get("rope_theta") or 1e4))
        return cls(
            **shared,
            n_kv_head=int(_first(cfg, "num_key_value_heads", default=32)),  # transformers' default
            rotary_dim=rotary_dim_of(cfg, params, dim // n_head, "stablelm", 0.25, odd_ok=False),
            rope_theta=theta,
            qkv_bias=bool(_first(cfg, "use_qkv_bias", default=False)),
            qk_norm=bool(_first(cfg, "qk_layernorm", default=False)),
            parallel=bool(_first(cfg, "use_parallel_residual", default=False)),
        )

    def to_hf(self) -> dict:
        """A ``StableLmForCausalLM`` config.json dict."""
        f = self.rotary_dim / self.head_dim
        return {
            "architectures": ["StableLmForCausalLM"], "model_type": "stablelm", "vocab_size": self.vocab_size,
            "hidden_size": self.dim, "num_hidden_layers": self.n_layer, "num_attention_heads": self.n_head,
            "num_key_value_heads": self.n_kv_head, "intermediate_size": self.ffn_dim,
            "layer_norm_eps": self.norm_eps, "rope_theta": self.rope_theta, "partial_rotary_factor": f,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta, "partial_rotary_factor": f},
            "max_position_embeddings": self.context_length, "use_qkv_bias": self.qkv_bias,
            "qk_layernorm": self.qk_norm, "use_parallel_residual": self.parallel,
            "tie_word_embeddings": self.tie_embeddings, "hidden_act": self.act, "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id, "torch_dtype": "float32",
        }


class StableLM(RotaryLM):
    """A StableLM decoder. ``StableLM(StableLMConfig(...))`` is randomly initialised."""

    arch = "stablelm"

    def __init__(self, config: StableLMConfig) -> None:
        super().__init__()
        self.config = c = config
        if c.n_head % c.n_kv_head:
            raise UserError(f"stablelm config: {c.n_head} heads are not a multiple of {c.n_kv_head} kv heads")
        self.rotary_dim, self.rope_theta = c.rotary_dim, c.rope_theta
        self._build(nn.LayerNorm(c.dim, eps=c.norm_eps))

    def make_block(self, i: int) -> Block:
        """One decoder block; subclass and override to try a variant."""
        c = self.config
        attn = Attention(c.dim, c.n_head, c.n_kv_head, c.head_dim, bias=c.qkv_bias, o_bias=False)
        if c.qk_norm:
            attn.q_norm = HeadLayerNorm(c.n_head, c.head_dim, c.norm_eps)
            attn.k_norm = HeadLayerNorm(c.n_kv_head, c.head_dim, c.norm_eps)
        return Block(nn.LayerNorm(c.dim, eps=c.norm_eps), attn,
                     None if c.parallel else nn.LayerNorm(c.dim, eps=c.norm_eps),
                     MLP(c.dim, c.ffn_dim, c.act, gated=True, bias=False), parallel=c.parallel)


__all__ = ["GPTNeoX", "GPTNeoXConfig", "StableLM", "StableLMConfig"]
