"""The decode fast path: one new token of a batch-1 Llama-family model, without the module tree.

A decode step of a small model is overhead-bound: SmolLM2 runs 30 layers x ~35 torch ops and
~10 module calls each, which cost more than its matrix-vector products. ``FastDecoder`` runs the
same arithmetic as ``Block.forward`` on numpy buffers allocated once: per layer seven kernel
calls bound to their buffers (``PackedWeight.bound_matvec``; ``torch.mv`` into a preallocated
output for a dense float32 weight) and four compiled helpers (decode_numba.py: RMSNorm with the
residual add, RoPE + KV-cache write + attention, SwiGLU). ``generate`` uses it after the prefill.

It is used only when nothing could observe or change what the module tree would do, checked
once when it is built (``fast_decoder`` returns None otherwise, and the caller runs the model):
no hooks of ours or torch's, float32 on CPU, the plain Llama block (no qk-norm, post-norms,
sliding window or soft cap), and modules of exactly the engine's types. Plans are honoured
(order, repeats, skips, branch and head scales: one cache slot per occurrence, as the module
tree). Weights are read when it is built: an edit made during a generation is seen by the next one.
Results equal the module tree's within float32 rounding (sums in another order), not bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lminspect.compiled import load_kernels
from lminspect.models.common import MLP, Attention, Block, RMSNorm
from lminspect.models.kvcache import KVCache
from lminspect.models.packed import KIND_IDS, _threads, kernels
from lminspect.models.stored import StoredEmbedding, StoredLinear

ENABLED = True  # tests switch it off to compare with the module tree
_HELPERS: Any = None  # decode_numba, or False without numba
# the LM methods a decode step goes through: a subclass that overrides one runs the module tree
_SAME = ("forward", "prepare", "_context", "_extras", "_embed", "_logits", "logits", "raw_logits", "_run_plan",
         "_begin")


def helpers() -> Any:
    """The compiled helpers module, or None without numba."""
    global _HELPERS
    if _HELPERS is None:
        _HELPERS = load_kernels("lminspect.models.decode_numba", lambda m: m.warm_up(), "decode", "the module tree")
    return _HELPERS or None


def _f32(t: torch.Tensor) -> np.ndarray:
    """A float32 CPU tensor's numpy view (shares memory: in-place edits are seen)."""
    return t.detach().contiguous().numpy()


def _bind(lin: nn.Module, x: np.ndarray, keep_perm: bool, preps: dict[int, Callable[[], None]]
          ) -> tuple[Callable[[], None], np.ndarray, Any] | None:
    """``(call, y, perm)``: ``call()`` writes ``lin(x)`` into ``y``, rows in ``perm`` order (canonical row
    i is ``y[perm[i]]``; None: in order); ``keep_perm`` False asks for canonical rows. None: not bindable.
    ``preps``: the int8 quantization of each input buffer, shared (``PackedWeight.bound_matvec``)."""
    perm = None
    if type(lin) is StoredLinear and lin.kernel_ready:
        got = lin.packed.bound_matvec(x, preps)
        if got is None:
            return None
        call, y = got
        perm = lin.__dict__["_perm"]
    elif type(lin) in (StoredLinear, nn.Linear):
        w = lin.weight if type(lin) is nn.Linear else lin._dense_now()
        if w.dtype != torch.float32 or w.device.type != "cpu" or w.dim() != 2:
            return None
        y = np.empty(w.shape[0], np.float32)
        call = partial(torch.mv, w.detach(), torch.from_numpy(x), out=torch.from_numpy(y))
    else:
        return None
    b = lin.bias
    if perm is not None and not keep_perm:
        return None  # only q / k (GGUF rotary rows) carry a row order; attention gathers them
    if b is not None:
        b = _f32(b)
        if perm is not None:  # the bias in the weight's row order
            bp = np.zeros(len(y), np.float32)
            bp[perm] = b
            b = bp
        call = partial(_then_add, call, y, b)
    if perm is None and keep_perm:
        perm = np.arange(len(y), dtype=np.int64)
    return call, y, None if perm is None else np.ascontiguousarray(perm, dtype=np.int64)


def _nothing() -> None:
    pass


def _then_add(call: Callable[[], None], y: np.ndarray, b: np.ndarray) -> None:
    call()
    np.add(y, b, out=y)


def _plain_block(block: nn.Module) -> bool:
    """Whether a block computes exactly what the fast path does (Llama's pre-norm SwiGLU block)."""
    attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
    return (type(block) is Block and type(attn) is Attention and type(mlp) is MLP
            and type(block.attn_norm) is RMSNorm and type(block.mlp_norm) is RMSNorm
            and not block.parallel and block.attn_post_norm is None and block.mlp_post_norm is None
            and attn.q_norm is None and attn.k_norm is None and attn.v_norm is None
            and attn.softcap is None and attn.window is None
            and mlp.gate is not None and mlp.act is F.silu)


def _hooked(model: nn.Module) -> bool:
    """Whether any torch module hook (forward or pre-forward, global or on a module) is installed."""
    from torch.nn.modules import module as tm

    if tm._global_forward_hooks or tm._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


class FastDecoder:
    """Decode steps of one model on one KV cache (see the module doc); ``step(token)`` returns the
    next-token logits ``[vocab]``, a view of a buffer the next step overwrites."""

    def __init__(self, model: Any, cache: KVCache, fns: Any) -> None:
        self.model, self.cache, self.fns = model, cache, fns
        c = model.config
        dim = c.dim
        self.x = np.zeros(dim, np.float32)  # the residual stream
        self.h = np.zeros(dim, np.float32)  # its normed form, what the projections read
        self.preps: dict[int, Callable[[], None]] = {}  # input buffer id -> its int8 quantization
        self.emb_mult = float(c.embedding_multiplier)
        self.logit_div = float(c.logits_scaling)
        self.n_head = max(model.layers[call.index].attn.n_head for call in cache.plan)
        blocks: dict[int, tuple] = {}
        for i in sorted({call.index for call in cache.plan}):
            b = self._block(model.layers[i])
            if b is None:
                raise _NotPlain
            blocks[i] = b
        self.steps = []
        for p, call in enumerate(cache.plan):
            blk = model.layers[call.index]
            f = call.head_factors(blk.attn.n_head, blk.attn.n_kv_head) if call.has_head_scales else None
            heads = np.array(f if f is not None else [1.0] * blk.attn.n_head, np.float32)
            self.steps.append((p, blocks[call.index], heads, float(call.attn_scale * blk.residual_scale),
                               float(call.mlp_scale * blk.residual_scale)))
        self.norm = (_f32(model.norm.weight), float(model.norm.eps))
        head = getattr(model, "head", None) or model.__dict__.get("_tied_head")
        got = _bind(head, self.h, False, self.preps) if head is not None else None
        if got is None:
            if head is not None:
                raise _NotPlain
            w = model.embed.tokens.weight
            y = np.empty(w.shape[0], np.float32)
            got = (partial(torch.mv, w.detach(), torch.from_numpy(self.h), out=torch.from_numpy(y)), y, None)
        self.head, self.logits_np = got[0], got[1]
        self.logits = torch.from_numpy(self.logits_np)
        self.prep_h = self.preps.get(id(self.h)) or _nothing  # bound last: every reader of h is known
        self.cos, self.sin = _f32(model.rope_cos), _f32(model.rope_sin)
        if self.cos.shape[1] != model.layers[0].attn.head_dim:
            raise _NotPlain  # partial rotary: not this path
        emb = model.embed.tokens
        if type(emb) is StoredEmbedding and emb._parameters["weight"] is None and not emb.packed.tiled:
            self.embed_packed, self.embed_w = emb.packed, None
        elif type(emb) in (StoredEmbedding, nn.Embedding) and emb.weight.dtype == torch.float32:
            self.embed_packed, self.embed_w = None, emb.weight.detach()
        else:
            raise _NotPlain
        self.embed_kind = KIND_IDS.get(self.embed_packed.kind) if self.embed_packed is not None else None
        self._views_of: Any = None

    def _block(self, blk: Block) -> tuple | None:
        a, m = blk.attn, blk.mlp
        hd = a.head_dim
        pr = self.preps
        q, k, v = _bind(a.q, self.h, True, pr), _bind(a.k, self.h, True, pr), _bind(a.v, self.h, False, pr)
        y = np.zeros(a.n_head * hd, np.float32)
        o = _bind(a.o, y, False, pr)
        gate, up = _bind(m.gate, self.h, False, pr), _bind(m.up, self.h, False, pr)
        if None in (q, k, v, o, gate, up) or len(q[2]) != a.n_head * hd or len(k[2]) != a.n_kv_head * hd:
            return None
        hidden = np.zeros(len(gate[1]), np.float32)
        down = _bind(m.down, hidden, False, pr)
        if down is None:
            return None
        scale = a.scale if a.scale is not None else 1.0 / math.sqrt(hd)
        return (_f32(blk.attn_norm.weight), float(blk.attn_norm.eps), _f32(blk.mlp_norm.weight),
                float(blk.mlp_norm.eps), q[0], k[0], v[0], q[1], k[1], v[1], q[2], k[2], bool(a.rope), float(scale),
                y, o[0], o[1], gate[0], up[0], gate[1], up[1], hidden, down[0], down[1],
                np.zeros((a.n_head, hd), np.float32), pr.get(id(y)) or _nothing, pr.get(id(hidden)) or _nothing)

    def _views(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """numpy views of the cache's slots ``[n_kv, capacity, head_dim]`` (remade when it grows)."""
        cache = self.cache
        key = (id(cache.k), id(cache.k[0]) if cache.k else 0)
        if self._views_of != key:
            self._kv = [(k[0].numpy(), v[0].numpy()) for k, v in zip(cache.k, cache.v, strict=True)]
            self._scores = np.empty((self.n_head, max(1, cache.capacity)), np.float32)
            self._views_of = key
        return self._kv

    def step(self, token: int) -> torch.Tensor:
        """Feed one token at the cache's position; the logits of the next."""
        cache, fns = self.cache, self.fns
        pos = cache.pos
        cache.reserve(pos + 1)
        kv = self._views()
        scores = self._scores
        _threads()
        x, h = self.x, self.h
        if self.embed_kind is not None:
            fns.embed_row(self.embed_kind, self.embed_packed.raw[token], x)
        elif self.embed_packed is not None:
            self.embed_packed.dense(slice(token, token + 1), out=x)
        else:
            torch.from_numpy(x).copy_(self.embed_w[token])
        if self.emb_mult != 1.0:
            x *= np.float32(self.emb_mult)
        cos, sin = self.cos[pos], self.sin[pos]
        rmsnorm, add_rmsnorm, attend, silu_mul = fns.rmsnorm, fns.add_rmsnorm, fns.attend, fns.silu_mul
        prep_h = self.prep_h
        prev = None
        for p, blk, heads, s_attn, s_mlp in self.steps:
            (wa, ea, wm, em, q, k, v, qy, ky, vy, qperm, kperm, rope, scale,
             y, o, oy, gate, up, gy, uy, hidden, down, dy, qbuf, prep_y, prep_hidden) = blk
            if prev is None:
                rmsnorm(x, wa, ea, h)
            else:
                add_rmsnorm(x, prev[0], prev[1], wa, ea, h)
            prep_h()
            q()
            k()
            v()
            kc, vc = kv[p]
            attend(qy, ky, vy, qperm, kperm, cos, sin, rope, kc, vc, pos, scale, heads, y, qbuf, scores)
            prep_y()
            o()
            add_rmsnorm(x, oy, s_attn, wm, em, h)
            prep_h()
            gate()
            up()
            silu_mul(gy, uy, hidden)
            prep_hidden()
            down()
            prev = (dy, s_mlp)
        wn, en = self.norm
        if prev is None:
            rmsnorm(x, wn, en, h)
        else:
            add_rmsnorm(x, prev[0], prev[1], wn, en, h)
        prep_h()
        self.head()
        if self.logit_div != 1.0:
            self.logits_np /= np.float32(self.logit_div)
        cache.pos = pos + 1
        return self.logits


class _NotPlain(Exception):
    """A piece the fast path does not compute: the module tree runs instead."""


def fast_decoder(model: Any, cache: KVCache) -> FastDecoder | None:
    """A ``FastDecoder`` for ``model`` on ``cache`` when nothing rules it out (module doc), else None."""
    from lminspect.models.llama import Llama

    if not ENABLED or not isinstance(model, Llama) or cache.batch_size != 1 or torch.is_grad_enabled():
        return None
    if any(getattr(type(model), n) is not getattr(Llama, n) for n in _SAME):
        return None
    if model._hooks is not None or model.window is not None or model.logit_softcap is not None:
        return None
    if model.dtype != torch.float32 or model.device.type != "cpu" or type(model.norm) is not RMSNorm:
        return None
    if not cache.k or cache.k[0].dtype != torch.float32 or not all(_plain_block(b) for b in model.layers):
        return None
    if kernels() is None or _hooked(model):
        return None
    fns = helpers()
    if fns is None:
        return None
    try:
        return FastDecoder(model, cache, fns)
    except _NotPlain:
        return None


__all__ = ["ENABLED", "FastDecoder", "fast_decoder"]
