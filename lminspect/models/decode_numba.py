"""The small per-layer steps of a decode step, compiled (numba): what models/decode.py runs
between the matrix-vector kernels, each one call instead of several torch ops.

Imported only through ``decode.helpers()`` (``compiled.load_kernels``): without numba the
decode fast path is off and the module tree runs. Everything is float32 in, float32 out;
sums of squares and the softmax's sums are taken in float64 (as close to exact as torch's
float32 reductions are, or closer), so results agree with the module tree within float32
rounding, not bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from lminspect.models.packed_numba import BLOCK_BYTES, QK, deq_block

# attention's dot products and sums in vector lanes (reassociated): no nnan/ninf, so a nan or inf
# propagates as in the module tree
_FM = {"reassoc", "contract"}


@njit(nogil=True, cache=True)
def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float, out: np.ndarray) -> None:
    """out = w * (x / sqrt(mean(x^2) + eps)): Llama's RMSNorm on one float32 vector."""
    n = x.shape[0]
    ss = 0.0
    for i in range(n):
        ss += np.float64(x[i]) * x[i]
    r = np.float32(1.0 / math.sqrt(np.float32(ss / n) + np.float32(eps)))
    for i in range(n):
        out[i] = w[i] * (x[i] * r)


@njit(nogil=True, cache=True)
def add_rmsnorm(x: np.ndarray, a: np.ndarray, scale: float, w: np.ndarray, eps: float, out: np.ndarray) -> None:
    """x += scale * a (the residual add, in place), then out = rmsnorm(x) * w."""
    s = np.float32(scale)
    n = x.shape[0]
    ss = 0.0
    if s == 1:
        for i in range(n):
            v = x[i] + a[i]
            x[i] = v
            ss += np.float64(v) * v
    else:
        for i in range(n):
            v = x[i] + a[i] * s
            x[i] = v
            ss += np.float64(v) * v
    r = np.float32(1.0 / math.sqrt(np.float32(ss / n) + np.float32(eps)))
    for i in range(n):
        out[i] = w[i] * (x[i] * r)


@njit(nogil=True, cache=True)
def add_scaled(x: np.ndarray, a: np.ndarray, scale: float) -> None:
    """x += scale * a (the last residual add of a step)."""
    s = np.float32(scale)
    for i in range(x.shape[0]):
        x[i] += a[i] * s if s != 1 else a[i]


@njit(nogil=True, cache=True)
def silu_mul(g: np.ndarray, u: np.ndarray, out: np.ndarray) -> None:
    """out = silu(g) * u (SwiGLU's hidden vector)."""
    for i in range(g.shape[0]):
        v = g[i]
        out[i] = v / (np.float32(1) + np.exp(-v)) * u[i]


@njit(nogil=True, cache=True)
def _rope_head(src: np.ndarray, perm: np.ndarray, o: int, cos: np.ndarray, sin: np.ndarray,
               dst: np.ndarray, rope: bool) -> None:
    """One head of rotate-half RoPE: dst[d] from src[perm[o + d]] (perm: a GGUF q/k row order)."""
    hd = dst.shape[0]
    half = hd // 2
    if not rope:
        for d in range(hd):
            dst[d] = src[perm[o + d]]
        return
    for d in range(half):
        a = src[perm[o + d]]
        b = src[perm[o + d + half]]
        dst[d] = a * cos[d] - b * sin[d]
        dst[d + half] = b * cos[d + half] + a * sin[d + half]


@njit(fastmath=_FM, nogil=True, cache=True)
def attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, qperm: np.ndarray, kperm: np.ndarray,
           cos: np.ndarray, sin: np.ndarray, rope: bool, kc: np.ndarray, vc: np.ndarray, pos: int,
           scale: float, heads: np.ndarray, y: np.ndarray, qbuf: np.ndarray, scores: np.ndarray) -> None:
    """One new token's attention over a cache slot: RoPE on its q / k (rows in ``perm`` order),
    k and v written at ``pos`` of ``kc`` / ``vc`` ``[n_kv, capacity, head_dim]``, then for each
    query head softmax(q K^T * scale) V over positions 0..pos, times ``heads[h]`` -> ``y [H * D]``.
    The query heads that share a K/V head go together, so each cached row is read once.
    ``qbuf [n_head, D]`` and ``scores [n_head, >= pos + 1]`` are scratch."""
    n_kv, _, hd = kc.shape
    n_head = heads.shape[0]
    rep = n_head // n_kv
    n = pos + 1
    sc = np.float32(scale)
    for g in range(n_kv):
        _rope_head(k, kperm, g * hd, cos, sin, kc[g, pos], rope)
        for d in range(hd):
            vc[g, pos, d] = v[g * hd + d]
    for h in range(n_head):
        _rope_head(q, qperm, h * hd, cos, sin, qbuf[h], rope)
    for g in range(n_kv):
        kg = kc[g]
        vg = vc[g]
        h0 = g * rep
        for j in range(n):
            kj = kg[j]
            for r in range(rep):
                qh = qbuf[h0 + r]
                s = np.float32(0)
                for d in range(hd):
                    s += qh[d] * kj[d]
                scores[h0 + r, j] = s * sc
        for r in range(rep):
            row = scores[h0 + r]
            mx = np.float32(-np.inf)
            for j in range(n):
                mx = max(mx, row[j])
            tot = 0.0
            for j in range(n):
                e = np.exp(row[j] - mx)
                row[j] = e
                tot += e
            f = np.float32(heads[h0 + r] / tot)
            for j in range(n):
                row[j] *= f
            o = (h0 + r) * hd
            for d in range(hd):
                y[o + d] = 0
        for j in range(n):
            vj = vg[j]
            for r in range(rep):
                p = scores[h0 + r, j]
                o = (h0 + r) * hd
                for d in range(hd):
                    y[o + d] += p * vj[d]


@njit(nogil=True, cache=True)
def embed_row(kind: int, row: np.ndarray, out: np.ndarray) -> None:
    """One GGUF block row's exact float32 values (a token's embedding; ``packed_numba.deq_block``,
    the arithmetic of ``PackedWeight.dense``), on this thread: no parallel launch for one row."""
    qk = QK[kind]
    bb = BLOCK_BYTES[kind]
    for b in range(out.shape[0] // qk):
        deq_block(kind, row, b * bb, out[b * qk:(b + 1) * qk])


def warm_up() -> None:
    """Compile (or load from numba's disk cache) every helper on tiny inputs."""
    x = np.ones(8, np.float32)
    out = np.empty(8, np.float32)
    rmsnorm(x, x, 1e-6, out)
    add_rmsnorm(out, x, 1.0, x, 1e-6, out)
    add_scaled(out, x, 1.0)
    silu_mul(x, x, out)
    embed_row(0, np.zeros(34, np.uint8), np.empty(32, np.float32))
    perm = np.arange(8, dtype=np.int64)
    kc = np.zeros((1, 2, 8), np.float32)
    attend(x, x, x, perm, perm, x, x, True, kc, kc.copy(), 0, 0.5, np.ones(1, np.float32), out,
           np.empty((1, 8), np.float32), np.empty((1, 2), np.float32))
