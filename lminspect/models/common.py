"""Pieces shared by every model family: norms, attention, MLP, decoder block, hooks, LM base.

Design choices (one engine for generate / eval / stitch / stats / train):

- Parameter names are the canonical names of docs/ARCHITECTURE.md (``layers.N.attn.q.weight`` ...),
  so ``state_dict()`` round-trips through the weight store and export without a name map.
- A forward pass runs a *plan* (``list[LayerCall]``): blocks in any order, repeated or skipped,
  with per-occurrence attention/MLP scales. The model itself is never modified by a plan.
- Attention uses ``F.scaled_dot_product_attention``; an eager path (explicit softmax) runs only
  when someone asked for attention probabilities, so parity and speed do not pull against each other.
- The KV cache (``models/kvcache.py``, apart from the model) has one slot per plan *occurrence* (a repeated block must not share its keys),
  preallocated tensors written in place (no ``torch.cat`` per step), grown by doubling if needed.
- Hooks cost one ``if`` per site when unused: the forward carries a ``_Run`` context whose
  ``hooks`` field is ``None`` unless ``run_with_cache`` / ``model.hooks(...)`` installed one.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lminspect.errors import UserError
from lminspect.models.hooks import _NAMED_ONLY, SITE_KINDS, HookCallback, _Hooks, _parse_sites  # noqa: F401
from lminspect.models.kvcache import KVCache
from lminspect.models.layercall import LayerCall, full_plan
from lminspect.models.window import window_bias
from lminspect.validate import token_ids

# --------------------------------------------------------------------------- norms / activations


class RMSNorm(nn.Module):
    """Llama's RMSNorm, computed in float32 like HF (then cast back before the weight)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if dtype == torch.float32:  # F.rms_norm is slower on CPU (not fused there); .float() is a no-op
            return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The MLP nonlinearity named in a HF config (``activation_function`` / ``hidden_act``)."""
    name = (name or "").lower()
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "gelu":
        return F.gelu
    if name in ("silu", "swish"):
        return F.silu
    if name == "relu":
        return F.relu
    raise UserError(
        f"unsupported activation {name!r} (expected one of gelu, gelu_new, gelu_pytorch_tanh, silu, relu)"
    )


# --------------------------------------------------------------------------- positions


def rope_tables(head_dim: int, theta: float, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [length, head_dim] in float32, computed exactly as HF's default RoPE."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    pos = torch.arange(length, dtype=torch.int64).float()
    freqs = pos[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE; x [B, H, T, D], cos/sin [T, R] already in x's dtype. R < D is partial
    rotary (GPT-NeoX, StableLM, Phi): the first R channels turn, the rest pass through."""
    if cos.shape[-1] < x.shape[-1]:
        r = cos.shape[-1]
        return torch.cat((apply_rope(x[..., :r], cos, sin), x[..., r:]), dim=-1)
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin


def alibi_slopes(n_head: int) -> torch.Tensor:
    """ALiBi head slopes (Press et al.), as HF Falcon/BLOOM compute them (float32)."""
    closest = 2 ** math.floor(math.log2(n_head))
    base = torch.tensor(2 ** (-(2 ** -(math.log2(closest) - 3))), dtype=torch.float32)
    slopes = torch.pow(base, torch.arange(1, 1 + closest, dtype=torch.int32))
    if closest != n_head:
        extra = torch.tensor(2 ** (-(2 ** -(math.log2(2 * closest) - 3))), dtype=torch.float32)
        n_rest = min(closest, n_head - closest)
        slopes = torch.cat([slopes, torch.pow(extra, torch.arange(1, 1 + 2 * n_rest, 2, dtype=torch.int32))])
    return slopes


def alibi_table(n_head: int, length: int) -> torch.Tensor:
    """Per-key ALiBi bias [n_head, length] in float32. HF multiplies in bfloat16; we match it
    bit for bit (the softmax is shift invariant, so a key-position bias equals the relative one)."""
    return (alibi_slopes(n_head).bfloat16()[:, None] * torch.arange(length)[None, :]).float()


# --------------------------------------------------------------------------- attention / MLP / block


@dataclass
class _Run:
    """Per-forward context shared by every block (built once per forward, not per layer)."""

    start: int  # absolute position of the first new token
    length: int  # number of new tokens T
    cos: torch.Tensor | None  # RoPE tables for the new positions [T, D] (None: no RoPE)
    sin: torch.Tensor | None
    bias: torch.Tensor | None  # additive attention bias [1|B, H, T, L] (ALiBi + causal), None: causal
    cache: KVCache | None
    hooks: _Hooks | None
    causal_head: int = 0  # the first n tokens see only each other, causally (token trees): attend them apart
    wbias: torch.Tensor | None = None  # the bias of sliding-window layers (models/window.py); None: as ``bias``
    local_rope: tuple[torch.Tensor, torch.Tensor] | None = None  # sliding-window layers' own cos/sin (Gemma 3)


class Attention(nn.Module):
    """Multi-head attention with grouped KV heads; RoPE or ALiBi come from the ``_Run`` context.

    ``v_norm`` (default None) is an optional module applied to the value projection output
    ``[B, T, n_kv_head * head_dim]``; experiments set it (e.g. ``nn.LayerNorm``) without subclassing.
    ``q_norm`` / ``k_norm`` (Qwen3 per head, OLMo 2 over the whole projection: ``qk_norm_full``) act
    before RoPE; ``rope=False`` skips RoPE in this layer (SmolLM3); ``scale`` replaces 1/sqrt(head_dim)
    (Granite); ``window`` makes it a sliding-window layer (it reads ``run.wbias``, and ``run.local_rope``
    when set); ``softcap`` (Gemma 2) caps the scores at ``c * tanh(s / c)`` (the eager path).
    """

    def __init__(self, dim: int, n_head: int, n_kv_head: int, head_dim: int, bias: bool,
                 o_bias: bool | None = None, *, rope: bool = True, scale: float | None = None,
                 window: int | None = None) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = n_head, n_kv_head, head_dim
        self.q = nn.Linear(dim, n_head * head_dim, bias=bias)
        self.k = nn.Linear(dim, n_kv_head * head_dim, bias=bias)
        self.v = nn.Linear(dim, n_kv_head * head_dim, bias=bias)
        self.o = nn.Linear(n_head * head_dim, dim, bias=bias if o_bias is None else o_bias)
        self.v_norm: nn.Module | None = None
        self.q_norm: nn.Module | None = None
        self.k_norm: nn.Module | None = None
        self.qk_norm_full = False
        self.rope, self.scale, self.window = rope, scale, window
        self.softcap: float | None = None

    def forward(self, x: torch.Tensor, run: _Run, pos: int, heads: list[float] | None = None,
                q_from: int = 0) -> torch.Tensor:
        """``heads``: one factor per query head multiplying that head's output before ``o``
        (head ablation in plans); the ``attn_z`` hook site sees ``[B, T, H, head_dim]`` after it.
        ``q_from``: outputs only for tokens from there on (all tokens still give keys/values; a
        masked run without hooks: the last layer of a scoring pass needs only the scored tokens)."""
        B, T, _ = x.shape
        q, k = self.q(x[:, q_from:] if q_from else x), self.k(x)
        if self.q_norm is not None:
            q, k = self._qk_norm(q, k)
        q = q.view(B, T - q_from, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # [B, KV, T, D]
        v = self.v(x)
        if self.v_norm is not None:
            v = self.v_norm(v)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if run.cos is not None and self.rope:
            rc, rs = run.local_rope if self.window is not None and run.local_rope is not None else (run.cos, run.sin)
            cos, sin = (rc[..., q_from:, :], rs[..., q_from:, :]) if q_from else (rc, rs)
            q, k = apply_rope(q, cos, sin), apply_rope(k, rc, rs)
        cache = run.cache
        if cache is not None:
            end = run.start + T
            kc, vc = cache.k[pos], cache.v[pos]
            kc[:, :, run.start:end] = k
            vc[:, :, run.start:end] = v
            k, v = kc[:, :, :end], vc[:, :, :end]
        hooks = run.hooks
        if self.window is not None and run.wbias is not None:
            run = _Run(run.start, run.length, run.cos, run.sin, run.wbias, cache, hooks)  # the window cuts the head too
        if self.softcap is not None or (hooks is not None and hooks.wants("attn_probs", pos)):
            y = self._eager(q, k, v, run, pos, q_from)
        else:
            gqa, sc = self.n_kv_head != self.n_head, self.scale
            if q_from:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=run.bias[:, :, q_from:], enable_gqa=gqa, scale=sc)
            elif run.bias is not None and run.causal_head:
                y = self._split_causal(q, k, v, run, gqa)
            elif run.bias is not None:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=run.bias, enable_gqa=gqa, scale=sc)
            elif T == 1:  # decoding one token: it sees every cached key, no mask
                y = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa, scale=sc)
            elif run.start == 0:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa, scale=sc)
            else:  # chunk after a cached prefix: causal mask aligned to the bottom right
                L = k.shape[2]
                mask = torch.ones(T, L, dtype=torch.bool, device=q.device).tril(L - T)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa, scale=sc)
        if heads is not None:
            y = y * torch.tensor(heads, dtype=y.dtype, device=y.device).view(1, -1, 1, 1)
        y = y.transpose(1, 2)  # [B, T, H, D]
        if hooks is not None and hooks.wants("attn_z", pos):
            y = hooks.emit("attn_z", pos, y)
        return self.o(y.reshape(B, T - q_from, self.n_head * self.head_dim))

    def _qk_norm(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q/k norms on ``[B, T, heads * head_dim]``: over the whole width, or per head."""
        if self.qk_norm_full:
            return self.q_norm(q), self.k_norm(k)
        hd = self.head_dim
        return (self.q_norm(q.unflatten(-1, (-1, hd))).flatten(-2), self.k_norm(k.unflatten(-1, (-1, hd))).flatten(-2))

    def _split_causal(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, run: _Run, gqa: bool) -> torch.Tensor:
        """Attention when the first ``n = run.causal_head`` tokens see only each other causally: they
        attend apart (causal, so whole blocks are skipped), the rest through the mask. Same result as
        one masked call, at about 60% of its work for a token tree whose context is half its length."""
        n, bias = run.causal_head, run.bias
        if n >= q.shape[2]:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=gqa, scale=self.scale)
        head_bias = bias[:, :, :n, :n]
        if head_bias.shape[1] == 1:  # no per-head key bias (ALiBi): the mask is plain causal there
            y0 = F.scaled_dot_product_attention(q[:, :, :n], k[:, :, :n], v[:, :, :n], is_causal=True, enable_gqa=gqa,
                                                scale=self.scale)
        else:
            y0 = F.scaled_dot_product_attention(q[:, :, :n], k[:, :, :n], v[:, :, :n], attn_mask=head_bias,
                                                enable_gqa=gqa, scale=self.scale)
        y1 = F.scaled_dot_product_attention(q[:, :, n:], k, v, attn_mask=bias[:, :, n:], enable_gqa=gqa,
                                            scale=self.scale)  # = q_from n
        return torch.cat([y0, y1], 2)

    def _eager(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, run: _Run, pos: int,
               q_from: int = 0) -> torch.Tensor:
        """Explicit softmax(QK^T/sqrt(d) + bias) V, so the probabilities can be seen (and edited)."""
        rep = self.n_head // self.n_kv_head
        if rep != 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        T, L = q.shape[2], k.shape[2]
        scores = q @ k.transpose(-1, -2)  # [B, H, T, L]
        scores = scores / math.sqrt(self.head_dim) if self.scale is None else scores * self.scale
        if self.softcap is not None:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        if run.bias is not None:
            scores = scores + run.bias[:, :, q_from:]
        else:
            mask = torch.ones(T, L, dtype=torch.bool, device=q.device).tril(L - T)
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        if run.hooks is not None:
            probs = run.hooks.emit("attn_probs", pos, probs)
        return probs @ v


class MLP(nn.Module):
    """``down(act(up(x)))``, or the gated form ``down(act(gate(x)) * up(x))`` (SwiGLU)."""

    def __init__(self, dim: int, hidden: int, act: str, gated: bool, bias: bool) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=bias) if gated else None
        self.up = nn.Linear(dim, hidden, bias=bias)
        self.down = nn.Linear(hidden, dim, bias=bias)
        self.act = activation(act)

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            return self.act(self.gate(x)) * self.up(x)
        return self.act(self.up(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.hidden(x))


class Block(nn.Module):
    """Pre-norm decoder block. ``parallel`` = Falcon/GPT-J style (attention and MLP both read the
    block input, through ``mlp_norm`` if there is one (GPT-NeoX) else the attention's norm, and are
    both added to the residual). ``attn_post_norm`` / ``mlp_post_norm`` (None
    by default; OLMo 2) normalise each branch's output before it is added; ``residual_scale``
    (Granite's residual_multiplier) multiplies both branch outputs."""

    def __init__(self, attn_norm: nn.Module, attn: Attention, mlp_norm: nn.Module | None, mlp: MLP,
                 parallel: bool = False) -> None:
        super().__init__()
        self.attn_norm = attn_norm
        self.attn = attn
        if mlp_norm is not None:
            self.mlp_norm = mlp_norm
        else:
            self.mlp_norm = None
        self.mlp = mlp
        self.parallel = parallel
        self.attn_post_norm: nn.Module | None = None
        self.mlp_post_norm: nn.Module | None = None
        self.residual_scale = 1.0

    def forward(self, x: torch.Tensor, run: _Run, pos: int, call: LayerCall, q_from: int = 0) -> torch.Tensor:
        """``q_from``: the output only for tokens from there on (see ``Attention.forward``)."""
        hooks = run.hooks
        if hooks is not None:
            x = hooks.emit("resid_in", pos, x)
        h = self.attn_norm(x)
        heads = call.head_factors(self.attn.n_head, self.attn.n_kv_head) if call.has_head_scales else None
        a = self.attn(h, run, pos, heads, q_from)
        if q_from:
            x, h = x[:, q_from:], h[:, q_from:]
        if self.attn_post_norm is not None:
            a = self.attn_post_norm(a)
        if call.attn_scale * self.residual_scale != 1.0:
            a = a * (call.attn_scale * self.residual_scale)
        if hooks is not None:
            a = hooks.emit("attn_out", pos, a)
        if self.parallel:
            m_in = h if self.mlp_norm is None else self.mlp_norm(x)
        else:
            x = x + a
            m_in = self.mlp_norm(x)
        if hooks is not None:
            mh = hooks.emit("mlp_hidden", pos, self.mlp.hidden(m_in))
            m = self.mlp.down(mh)
        else:
            m = self.mlp(m_in)
        if self.mlp_post_norm is not None:
            m = self.mlp_post_norm(m)
        if call.mlp_scale * self.residual_scale != 1.0:
            m = m * (call.mlp_scale * self.residual_scale)
        if hooks is not None:
            m = hooks.emit("mlp_out", pos, m)
        x = x + a + m if self.parallel else x + m
        if hooks is not None:
            x = hooks.emit("resid_out", pos, x)
        return x


def pad_mask(pad: torch.Tensor, start: int, T: int, L: int) -> torch.Tensor:
    """[B, 1, T, L] bool: causal, and row b's first ``pad[b]`` key columns hidden (left padding).

    A padding query still sees itself, so no softmax row is all -inf (its output is never used)."""
    q = torch.arange(start, start + T, device=pad.device)[:, None]
    k = torch.arange(L, device=pad.device)[None, :]
    real = k[None] >= pad[:, None, None]  # [B, 1, L]
    return ((k <= q)[None] & (real | (k == q)[None]))[:, None]  # [B, 1, T, L]


# --------------------------------------------------------------------------- the LM base


class LM(nn.Module):
    """Base of every family: embeddings -> blocks (per plan) -> final norm -> head.

    Subclasses build ``self.embed`` (with ``tokens`` and optionally ``positions``), ``self.layers``,
    ``self.norm``, optionally ``self.head`` (absent when tied) and implement the position hooks
    ``_embed(ids, start, rows)`` and ``_extras(start, T, L, rows)`` returning (cos, sin, bias);
    ``rows`` is None or per-row positions ``[B, T]`` (left-padded batches, see ``prepare``).
    """

    config: object
    arch: str = "unknown"
    window: int | None = None  # sliding-window size of the layers that have one (models/window.py)
    logit_softcap: float | None = None  # final logits become c * tanh(z / c) (Gemma 2); raw_logits is before it

    def _build(self, norm: nn.Module, *, positions: bool = False) -> None:
        """What every family's constructor shares, in state_dict order: token embedding
        (+ learned positions), the blocks from ``make_block``, the final norm, an untied head
        when the config asks for one; then derived tables and the training init."""
        c = self.config
        # load_model builds on the meta device: no random init there, no tables (it makes them after),
        # since normal_ and div on meta tensors import torch._dynamo (a second of every model load)
        meta = torch.empty(0).is_meta
        self.embed = nn.Module()
        self.embed.tokens = nn.Embedding(c.vocab_size, c.dim, _weight=torch.empty(c.vocab_size, c.dim) if meta else None)
        if positions:
            self.embed.positions = nn.Embedding(c.context_length, c.dim,
                                                _weight=torch.empty(c.context_length, c.dim) if meta else None)
        self.layers = nn.ModuleList(self.make_block(i) for i in range(c.n_layer))
        self.norm = norm
        if not c.tie_embeddings:
            self.head = nn.Linear(c.dim, c.vocab_size, bias=False)
        if not meta:
            self._make_buffers()
        self._finish_init()
        if not meta:
            self.init_weights()

    def _finish_init(self) -> None:
        self._hooks: _Hooks | None = None

    # ---- sizes
    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def context_length(self) -> int:
        return int(self.config.context_length)

    @property
    def vocab_size(self) -> int:
        return int(self.config.vocab_size)

    def _embed_like(self) -> torch.Tensor:
        """The token embedding's weight, or (stored form, models/stored.py) a tensor of its
        output's dtype and device: asking must not dequantize the matrix."""
        t = self.embed.tokens
        w = t._parameters.get("weight")
        return w if w is not None else t.__dict__["like"] if "like" in t.__dict__ else t.weight

    @property
    def device(self) -> torch.device:
        return self._embed_like().device

    @property
    def dtype(self) -> torch.dtype:
        return self._embed_like().dtype

    # ---- init
    def init_weights(self) -> None:
        """nanoGPT-style init: N(0, 0.02) for linears and embeddings, zero biases, unit norms,
        residual projections (attn.o, mlp.down) scaled by 1/sqrt(2 * n_layer)."""
        std = 0.02
        for mod in self.modules():
            if isinstance(mod, nn.Linear):
                nn.init.normal_(mod.weight, 0.0, std)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.Embedding):
                nn.init.normal_(mod.weight, 0.0, std)
            elif isinstance(mod, (nn.LayerNorm, RMSNorm)):
                if getattr(mod, "weight", None) is not None:
                    nn.init.ones_(mod.weight)
                if getattr(mod, "bias", None) is not None:
                    nn.init.zeros_(mod.bias)
        for block in self.layers:
            nn.init.normal_(block.attn.o.weight, 0.0, std / math.sqrt(2 * self.n_layers))
            nn.init.normal_(block.mlp.down.weight, 0.0, std / math.sqrt(2 * self.n_layers))

    # ---- plans
    def _check_plan(self, plan: list[LayerCall] | None) -> list[LayerCall]:
        n = self.n_layers
        if plan is None:
            full = self.__dict__.get("_full_plan")
            if full is None or len(full) != n:
                full = self.__dict__["_full_plan"] = full_plan(n)
            return full
        if getattr(plan, "scales_weights", False):  # a mergekit config's scale: not a branch scale
            raise UserError(f"{plan.where}: mergekit's 'scale' multiplies the weights, which a plan over shared "
                            "weights cannot do; use `lminspect stitch export` and run the exported folder",
                            hint="`lminspect stitch run` and `generate --plan` do that for you")
        for c in plan:
            if not 0 <= c.index < n:
                raise UserError(f"layer plan uses layer {c.index}, but the model has layers 0..{n - 1}")
            if c.has_head_scales:  # a bad head index fails here, before any compute
                c.head_factors(self.layers[c.index].attn.n_head, self.layers[c.index].attn.n_kv_head)
        return list(plan)

    def new_cache(self, plan: list[LayerCall] | None = None, batch_size: int = 1,
                  max_len: int | None = None) -> KVCache:
        """A KV cache with one slot per occurrence in ``plan`` (None: the full plan)."""
        plan = self._check_plan(plan)
        shapes = [(self.layers[c.index].attn.n_kv_head, self.layers[c.index].attn.head_dim) for c in plan]
        cap = max_len if max_len is not None else min(256, self.context_length)
        return KVCache(plan, shapes, batch_size, cap, self.context_length, self.dtype, self.device)

    # ---- family-specific pieces
    def _make_buffers(self) -> None:
        """(Re)create derived, non-persistent tables; called after a meta-device construction."""

    def _embed(self, ids: torch.Tensor, start: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        return self.embed.tokens(ids)

    def _extras(self, start: int, T: int, L: int, rows: torch.Tensor | None = None
                ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        return None, None, None

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        head = getattr(self, "head", None) or self.__dict__.get("_tied_head")  # (stored.py: packed tied head)
        if head is not None:
            return head(x)
        return F.linear(x, self.embed.tokens.weight)

    # ---- forward
    def prepare(self, input_ids: torch.Tensor, *, start: int = 0, pad: torch.Tensor | None = None,
                cache: KVCache | None = None) -> tuple[torch.Tensor, _Run]:
        """Embeddings ``[B, T, dim]`` and the per-forward context the blocks read.

        ``pad`` ([B] ints, left padding): row b's token at column c sits at position ``c - pad[b]``
        and its padding columns are masked out, so rows of different lengths batch exactly.
        Callers that run blocks themselves (``evals.mc_batch``) use this with ``layers[i](x, run,
        pos, call)`` and ``logits()``."""
        B, T = input_ids.shape
        L = start + T
        if L > self.context_length:
            raise UserError(f"sequence of {L} tokens exceeds the model's context of {self.context_length} tokens")
        rows = None
        if pad is not None:
            rows = (torch.arange(start, L, device=input_ids.device)[None] - pad[:, None]).clamp(min=0)
        x = self._embed(token_ids(input_ids, self.vocab_size, what="input"), start, rows)  # ids past the vocab: 1 line
        return x, self._context(start, T, x.dtype, cache, pad, rows)

    def prepare_tree(self, input_ids: torch.Tensor, positions: torch.Tensor, allowed: torch.Tensor,
                     causal_head: int = 0) -> tuple[torch.Tensor, _Run]:
        """Embeddings and run context for a batch of token trees (``evals.mc_batch``).

        Row b's token i sits at position ``positions[b, i]`` and attends to the tokens
        ``allowed[b, i]`` marks (``[B, T, T]`` bool: its ancestors and itself), so the endings of
        one context share the context's tokens in one sequence and score as they would alone.
        ``causal_head``: every row's first tokens up to there form a plain causal chain (the context),
        which attention then handles apart, at less cost."""
        B, T = input_ids.shape
        if int(positions.max()) >= self.context_length:
            raise UserError(f"sequence of {int(positions.max()) + 1} tokens exceeds the model's context of "
                            f"{self.context_length} tokens")
        x = self._embed(token_ids(input_ids, self.vocab_size, what="input"), 0, positions)
        cos, sin, _ = self._extras(0, T, T, positions)
        if cos is not None and cos.dtype != x.dtype:
            cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        bias = torch.zeros(allowed.shape, dtype=x.dtype, device=x.device).masked_fill_(~allowed, float("-inf"))
        bias = bias[:, None]  # [B, 1, T, T]
        key_bias = self._key_bias(positions)
        if key_bias is not None:
            bias = bias + key_bias.to(x.dtype)
        wbias = window_bias(bias, 0, T, T, self.window, x.dtype, x.device, positions) if self.window else None
        return x, _Run(0, T, cos, sin, bias, None, self._hooks, causal_head, wbias)

    def _key_bias(self, positions: torch.Tensor) -> torch.Tensor | None:
        """Position bias on attention scores by key position ``[B, H, 1, T]`` (ALiBi); None: none."""
        return None

    def _context(self, start: int, T: int, dtype: torch.dtype, cache: KVCache | None,
                 pad: torch.Tensor | None = None, rows: torch.Tensor | None = None) -> _Run:
        L = start + T
        cos, sin, bias = self._extras(start, T, L, rows)
        if cos is not None and cos.dtype != dtype:  # HF computes the tables in fp32, then casts
            cos, sin = cos.to(dtype), sin.to(dtype)
        if pad is not None:
            allowed = pad_mask(pad, start, T, L)
            if bias is None:
                bias = torch.zeros(allowed.shape, dtype=dtype, device=self.device)
            bias = bias.masked_fill(~allowed, float("-inf"))
        wbias = window_bias(bias, start, T, L, self.window, dtype, self.device) if self.window else None
        return _Run(start, T, cos, sin, bias, cache, self._hooks, 0, wbias)

    def raw_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm + head on hidden states ``[..., dim]``, before any soft cap (what DLA splits)."""
        return self._logits(self.norm(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm + head on hidden states ``[..., dim]`` (then the family's soft cap, if any)."""
        c = self.logit_softcap
        return self.raw_logits(x) if c is None else torch.tanh(self.raw_logits(x) / c) * c

    def forward(self, input_ids: torch.Tensor, *, cache: KVCache | None = None,
                plan: list[LayerCall] | None = None, last_only: bool = False,
                pad: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, T, vocab]`` for ``input_ids [B, T]`` (``last_only``: ``[B, 1, vocab]``).

        With a ``cache`` the tokens continue the cached sequence; the cache's plan is used when
        ``plan`` is None, and a different plan is an error (its slots would not line up).
        ``pad`` ([B] ints): row b is left-padded with ``pad[b]`` tokens that nothing attends to."""
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        B, T = input_ids.shape
        plan, start = self._begin(plan, cache, B, T)
        x, run = self.prepare(input_ids, start=start, pad=pad, cache=cache)
        return self._run_plan(x, run, plan, 0, cache, last_only)

    def forward_from(self, pos: int, resid: torch.Tensor, *, cache: KVCache | None = None,
                     plan: list[LayerCall] | None = None, last_only: bool = False) -> torch.Tensor:
        """Logits from plan position ``pos`` on, given the residual ``resid [B, T, D]`` that
        ``resid_in.{pos}`` would hold: the layers before ``pos`` are not run (their cache slots,
        if any, are left as they are). Activation patching branches a shared prefix this way."""
        B, T, _ = resid.shape
        plan, start = self._begin(plan, cache, B, T)
        if not 0 <= pos <= len(plan):
            raise UserError(f"plan position {pos} is out of range (0..{len(plan)})")
        if start + T > self.context_length:
            raise UserError(f"sequence of {start + T} tokens exceeds the model's context of {self.context_length} tokens")
        return self._run_plan(resid, self._context(start, T, resid.dtype, cache), plan, pos, cache, last_only)

    def _begin(self, plan: list[LayerCall] | None, cache: KVCache | None, B: int, T: int
               ) -> tuple[list[LayerCall], int]:
        """The plan to run and the absolute position of the first new token."""
        if cache is None:
            return self._check_plan(plan), 0
        if plan is not None and list(plan) != cache.plan:
            raise UserError("forward(plan=...) differs from the plan the KV cache was made for")
        if cache.batch_size != B:
            raise UserError(f"KV cache is for batch size {cache.batch_size}, got {B}")
        cache.reserve(cache.pos + T)
        return cache.plan, cache.pos

    def _run_plan(self, x: torch.Tensor, run: _Run, plan: list[LayerCall], first: int, cache: KVCache | None,
                  last_only: bool) -> torch.Tensor:
        layers = self.layers
        for pos in range(first, len(plan)):
            call = plan[pos]
            x = layers[call.index](x, run, pos, call)
        if cache is not None:
            cache.pos = run.start + run.length
        if last_only:
            x = x[:, -1:]
        return self.logits(x)

    def unembed_weight(self) -> torch.Tensor:
        """The unembedding ``[vocab, D]`` (the embedding itself when the head is tied)."""
        head = getattr(self, "head", None)
        return head.weight if head is not None else self.embed.tokens.weight

    # ---- hooks
    @contextlib.contextmanager
    def hooks(self, callback: HookCallback, sites: Iterable[str] | None = None) -> Iterator[LM]:
        """Call ``callback(site_name, tensor)`` at each hook site during forwards in this block.

        ``sites``: names ``"{kind}.{pos}"`` or bare kinds (all positions); None = every kind but
        ``attn_probs`` (probabilities are computed, via the eager path, only when named) and
        ``attn_z`` (per-head outputs, named for head-level work). A callback
        that returns a tensor replaces the activation (ablation / patching)."""
        exact, kinds = _parse_sites(sites)
        prev = self._hooks
        self._hooks = _Hooks(exact, kinds, callback, None)
        try:
            yield self
        finally:
            self._hooks = prev

    @torch.inference_mode()
    def run_with_cache(self, input_ids: torch.Tensor, sites: Iterable[str] | None = None,
                       plan: list[LayerCall] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward once and return ``(logits, {site_name: activation})`` for the requested sites."""
        exact, kinds = _parse_sites(sites)
        store: dict[str, torch.Tensor] = {}
        prev = self._hooks
        self._hooks = _Hooks(exact, kinds, None, store)
        try:
            logits = self.forward(input_ids, plan=plan)
        finally:
            self._hooks = prev
        return logits, store


def causal_bias(start: int, T: int, L: int, device: torch.device) -> torch.Tensor:
    """[T, L] additive mask: 0 where query (at start+i) may see key j, -inf elsewhere."""
    q = torch.arange(start, start + T, device=device)[:, None]
    k = torch.arange(L, device=device)[None, :]
    return torch.zeros(T, L, device=device).masked_fill(k > q, float("-inf"))
