"""The compiled dequantize-on-the-fly matvec kernels (numba: the optional ``[stats]`` extra).

Imported only through ``packed.kernels()``, which falls back to the torch versions in
``packed.py`` when numba is missing or these fail to compile. Module-level functions, so
numba's disk cache (``cache=True``) keeps the compiled code between processes.

Why this shape (measured on a 2-core AVX2 EPYC, 1 thread; see docs/engine.md):

- The weights come in tiles of T output rows laid out ``[tile, block, element, T]``: the
  innermost loop runs over the T rows of a tile, contiguous in memory, so LLVM vectorises it
  as plain lanes (8 rows per AVX2 register) with the activation element broadcast. No lane
  ever needs a horizontal sum, which is what made the row-major version 4-7x slower.
- Each lane adds its products in element order, so no reassociation (``fastmath`` beyond
  ``contract``) is needed, and results do not depend on the vector width.
- Nibbles are split with float arithmetic (``hi = floor(q / 16)``, ``lo = q - 16 * hi``, both
  exact): numba widens integer ``&`` and ``>>`` to int64, which quarters the lanes.
- One block's 32 products are summed per lane, then scaled once by the block's ``d`` (and
  its ``m`` times the block's activation sum for Q4_1): the same arithmetic as the
  dequantized matrix times x, in another order.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# contract: fused multiply-add; no reassociation, no assumptions about nan/inf
_FM = {"contract"}


@njit(fastmath=_FM, nogil=True, cache=True)
def q8_matvec(qs: np.ndarray, d: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out[G*T] = W x for Q8_0 tiles: qs int8 [G, nb, 32, T], d float32 [G, nb, T]."""
    ng, nb, _, t = qs.shape
    s = np.empty(t, np.float32)
    acc = np.empty(t, np.float32)
    for g in range(ng):
        acc[:] = 0
        for b in range(nb):
            s[:] = 0
            base = b * 32
            for j in range(0, 32, 4):
                x0 = x[base + j]
                x1 = x[base + j + 1]
                x2 = x[base + j + 2]
                x3 = x[base + j + 3]
                q0 = qs[g, b, j]
                q1 = qs[g, b, j + 1]
                q2 = qs[g, b, j + 2]
                q3 = qs[g, b, j + 3]
                for r in range(t):
                    s[r] += (np.float32(q0[r]) * x0 + np.float32(q1[r]) * x1) + (
                        np.float32(q2[r]) * x2 + np.float32(q3[r]) * x3)
            db = d[g, b]
            for r in range(t):
                acc[r] += db[r] * s[r]
        out[g * t:(g + 1) * t] = acc


@njit(fastmath=_FM, nogil=True, cache=True)
def q4_matvec(qs: np.ndarray, d: np.ndarray, m: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out[G*T] = W x for Q4_1 tiles (Q4_0 has m = -8 d): qs uint8 [G, nb, 16, T] whose byte
    holds element j (low nibble) and element j + 16 (high nibble); d, m float32 [G, nb, T]."""
    ng, nb, _, t = qs.shape
    s = np.empty(t, np.float32)
    acc = np.empty(t, np.float32)
    xs = np.empty(nb, np.float32)
    for b in range(nb):
        v = np.float32(0)
        for j in range(32):
            v += x[b * 32 + j]
        xs[b] = v
    sixteenth = np.float32(0.0625)
    sixteen = np.float32(16)
    for g in range(ng):
        acc[:] = 0
        for b in range(nb):
            s[:] = 0
            base = b * 32
            for j in range(0, 16, 2):
                x0 = x[base + j]
                x1 = x[base + j + 1]
                y0 = x[base + 16 + j]
                y1 = x[base + 17 + j]
                q0 = qs[g, b, j]
                q1 = qs[g, b, j + 1]
                for r in range(t):
                    a = np.float32(q0[r])
                    c = np.float32(q1[r])
                    ah = np.floor(a * sixteenth)
                    ch = np.floor(c * sixteenth)
                    s[r] += ((a - sixteen * ah) * x0 + ah * y0) + ((c - sixteen * ch) * x1 + ch * y1)
            db = d[g, b]
            mb = m[g, b]
            xb = xs[b]
            for r in range(t):
                acc[r] += db[r] * s[r] + mb[r] * xb
        out[g * t:(g + 1) * t] = acc


@njit(fastmath=_FM, nogil=True, cache=True)
def bf16_matvec(w: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out[G*T] = W x for bfloat16 tiles: w uint16 [G, in, T], the bf16 bits (the float32 with
    those bits shifted up 16 is the exact value; numba has no 16-bit float types)."""
    ng, n_in, t = w.shape
    acc = np.empty(t, np.float32)
    buf = np.empty(t, np.uint32)
    fbuf = buf.view(np.float32)
    for g in range(ng):
        acc[:] = 0
        for i in range(n_in):
            xi = x[i]
            wi = w[g, i]
            for r in range(t):
                buf[r] = np.uint32(wi[r]) << np.uint32(16)
            for r in range(t):
                acc[r] += fbuf[r] * xi
        out[g * t:(g + 1) * t] = acc


def warm_up() -> None:
    """Compile (or load from numba's cache) every kernel on tiny inputs."""
    x = np.ones(32, np.float32)
    out = np.empty(8, np.float32)
    q8_matvec(np.ones((1, 1, 32, 8), np.int8), np.ones((1, 1, 8), np.float32), x, out)
    d = np.ones((1, 1, 8), np.float32)
    q4_matvec(np.ones((1, 1, 16, 8), np.uint8), d, d, x, out)
    bf16_matvec(np.ones((1, 32, 8), np.uint16), x, out)
