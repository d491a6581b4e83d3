"""The compiled kernels on weights as stored (numba: the optional ``[stats]`` extra).

Imported only through ``packed.kernels()``, which falls back to torch / gguf-py code in
``packed.py`` when numba is missing or these fail to compile. Module-level functions, so
numba's disk cache (``cache=True``) keeps the compiled code between processes.

Every kernel reads the weights in the file's own layout, straight from the memory map (no
re-laid-out copy): bfloat16 / float16 rows ``[out, in]``, or GGUF block rows ``[out,
row_bytes]``. Two kinds of kernel:

- ``q_dequant`` / ``f16_to_f32``: the exact float32 values, equal bit for bit to gguf-py's
  ``gguf.quants.dequantize`` (compiled without fastmath: a fused multiply-add would round
  ``d * q - m`` once instead of twice, as numpy does).
- ``*_matmul``: ``out[M, out] = x[M, in] @ W.T`` for a few rows of activations (decode:
  one), each weight row read once. A block is dequantized into a small buffer with the same
  arithmetic, then dotted with the activations; the dot is summed with reassociation allowed
  (vector lanes), so it equals the dequantized matrix times x up to the order of additions.
  Activations stay float32 (no int8 rounding of x, unlike llama.cpp).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# reassoc: the dot's vector lanes (the order of additions); contract: fused multiply-add.
# No nnan/ninf: a nan or inf in the weights propagates as it would in a matmul.
_FM = {"reassoc", "contract"}
_FM_ORDERED = {"contract"}  # the tiles' kernels: lanes add in element order

# kind ids (``packed.KIND_IDS``) with their (elements, bytes) per block
Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K = range(8)
QK = np.array([32, 32, 32, 32, 32, 256, 256, 256], np.int64)
BLOCK_BYTES = np.array([34, 18, 20, 22, 24, 144, 176, 210], np.int64)

# 2 ** (e - 25) for a float16 exponent field e (1..30): (1024 + mantissa) * it is the value
_P2 = np.array([2.0 ** (max(e, 1) - 25) for e in range(32)], np.float32)
_SIXTEENTH = np.float32(0.0625)
_SIXTEEN = np.float32(16)


@njit(nogil=True, cache=True)
def _h2f(b0: np.uint8, b1: np.uint8) -> np.float32:
    """A little-endian float16 (two bytes) as float32, exactly."""
    h = np.int64(b0) | (np.int64(b1) << 8)
    e = (h >> 10) & 31
    m = h & 1023
    if e == 31:
        v = np.float32(np.inf) if m == 0 else np.float32(np.nan)
    elif e == 0:
        v = np.float32(m) * _P2[0]
    else:
        v = np.float32(1024 + m) * _P2[e]
    return -v if h >> 15 else v


@njit(nogil=True, cache=True)
def _scale_min_k4(sc: np.ndarray, o: int, j: int) -> tuple[np.float32, np.float32]:
    """Q4_K / Q5_K sub-block j's 6-bit scale and min from the 12 packed bytes at ``sc[o:]``."""
    if j < 4:
        s = np.int64(sc[o + j]) & 63
        m = np.int64(sc[o + 4 + j]) & 63
    else:
        s = (np.int64(sc[o + 4 + j]) & 15) | ((np.int64(sc[o + j - 4]) >> 2) & 48)
        m = (np.int64(sc[o + 4 + j]) >> 4) | ((np.int64(sc[o + j]) >> 2) & 48)
    return np.float32(s), np.float32(m)


@njit(nogil=True, cache=True)
def deq_block(kind: int, row: np.ndarray, o: int, buf: np.ndarray) -> None:
    """Dequantize the block at byte ``o`` of ``row`` into ``buf[:QK[kind]]`` (gguf-py's arithmetic)."""
    if kind == Q8_0:
        d = _h2f(row[o], row[o + 1])
        for i in range(32):
            buf[i] = np.float32(np.int8(row[o + 2 + i])) * d
    elif kind == Q4_0 or kind == Q5_0:
        d = _h2f(row[o], row[o + 1])
        if kind == Q4_0:
            for i in range(16):
                q = np.int64(row[o + 2 + i])
                buf[i] = d * np.float32((q & 15) - 8)
                buf[i + 16] = d * np.float32((q >> 4) - 8)
        else:
            qh = (np.int64(row[o + 2]) | (np.int64(row[o + 3]) << 8) | (np.int64(row[o + 4]) << 16)
                  | (np.int64(row[o + 5]) << 24))
            for i in range(16):
                q = np.int64(row[o + 6 + i])
                buf[i] = d * np.float32(((q & 15) | (((qh >> i) & 1) << 4)) - 16)
                buf[i + 16] = d * np.float32(((q >> 4) | (((qh >> (i + 16)) & 1) << 4)) - 16)
    elif kind == Q4_1 or kind == Q5_1:
        d = _h2f(row[o], row[o + 1])
        m = _h2f(row[o + 2], row[o + 3])
        if kind == Q4_1:
            for i in range(16):
                q = np.int64(row[o + 4 + i])
                buf[i] = d * np.float32(q & 15) + m
                buf[i + 16] = d * np.float32(q >> 4) + m
        else:
            qh = (np.int64(row[o + 4]) | (np.int64(row[o + 5]) << 8) | (np.int64(row[o + 6]) << 16)
                  | (np.int64(row[o + 7]) << 24))
            for i in range(16):
                q = np.int64(row[o + 8 + i])
                buf[i] = d * np.float32((q & 15) | (((qh >> i) & 1) << 4)) + m
                buf[i + 16] = d * np.float32((q >> 4) | (((qh >> (i + 16)) & 1) << 4)) + m
    elif kind == Q4_K or kind == Q5_K:
        d = _h2f(row[o], row[o + 1])
        dmin = _h2f(row[o + 2], row[o + 3])
        qs = o + (16 if kind == Q4_K else 48)  # Q5_K: 32 bytes of high bits first
        for j in range(8):
            s, mn = _scale_min_k4(row, o + 4, j)
            ds = d * s
            dm = dmin * mn
            base = qs + (j // 2) * 32
            shift = 4 * (j % 2)
            for i in range(32):
                q = (np.int64(row[base + i]) >> shift) & 15
                if kind == Q5_K:
                    q |= ((np.int64(row[o + 16 + i]) >> j) & 1) << 4
                buf[j * 32 + i] = ds * np.float32(q) - dm
    else:  # Q6_K: ql[128] qh[64] scales[16] (int8) d
        d = _h2f(row[o + 208], row[o + 209])
        for e in range(256):
            c = e // 128
            r = e % 128
            lo = (np.int64(row[o + c * 64 + r % 64]) >> (4 * (r // 64))) & 15
            hi = (np.int64(row[o + 128 + c * 32 + r % 32]) >> (2 * (r // 32))) & 3
            ds = d * np.float32(np.int8(row[o + 192 + e // 16]))
            buf[e] = ds * np.float32((lo | (hi << 4)) - 32)


@njit(nogil=True, cache=True, parallel=True)
def q_dequant(kind: int, raw: np.ndarray, out: np.ndarray) -> None:
    """out[rows, in] (float32) = the exact values of GGUF block rows ``raw [rows, row_bytes]``."""
    rows = raw.shape[0]
    qk = QK[kind]
    bb = BLOCK_BYTES[kind]
    nb = out.shape[1] // qk
    for r in prange(rows):
        row = raw[r]
        orow = out[r]
        for b in range(nb):
            deq_block(kind, row, b * bb, orow[b * qk:(b + 1) * qk])


@njit(nogil=True, cache=True, parallel=True)
def qk_dequant(kind: int, raw: np.ndarray, out: np.ndarray) -> None:
    """``q_dequant`` for Q4_K / Q5_K / Q6_K in vector lanes: bytes widened to float32, nibbles and
    bit fields split with exact float arithmetic, then ``d*sc * q - dmin*m`` (two roundings, as
    numpy: no fastmath here). The same numbers as ``deq_block``, bit for bit."""
    rows = raw.shape[0]
    nb = out.shape[1] // 256
    for r in prange(rows):
        row = raw[r]
        orow = out[r]
        for b in range(nb):
            e0 = b * 256
            if kind == Q6_K:
                o = b * 210
                d = _h2f(row[o + 208], row[o + 209])
                for half in range(2):
                    ql = o + half * 64
                    qh = o + 128 + half * 32
                    base = e0 + half * 128
                    for h in range(2):  # k < 16 and k >= 16: the sub-blocks' scales
                        sb = o + 192 + half * 8 + h
                        s0 = d * np.float32(np.int8(row[sb]))
                        s1 = d * np.float32(np.int8(row[sb + 2]))
                        s2 = d * np.float32(np.int8(row[sb + 4]))
                        s3 = d * np.float32(np.int8(row[sb + 6]))
                        for kk in range(16):
                            k = h * 16 + kk
                            a = np.float32(row[ql + k])
                            a2 = np.float32(row[ql + 32 + k])
                            t = np.float32(row[qh + k])
                            ah = np.floor(a * _SIXTEENTH)
                            a2h = np.floor(a2 * _SIXTEENTH)
                            t3 = np.floor(t * np.float32(1 / 64))
                            t = t - np.float32(64) * t3
                            t2 = np.floor(t * _SIXTEENTH)
                            t = t - _SIXTEEN * t2
                            t1 = np.floor(t * np.float32(0.25))
                            t0 = t - np.float32(4) * t1
                            orow[base + k] = s0 * ((a - _SIXTEEN * ah) + _SIXTEEN * t0 - np.float32(32))
                            orow[base + 32 + k] = s1 * ((a2 - _SIXTEEN * a2h) + _SIXTEEN * t1 - np.float32(32))
                            orow[base + 64 + k] = s2 * (ah + _SIXTEEN * t2 - np.float32(32))
                            orow[base + 96 + k] = s3 * (a2h + _SIXTEEN * t3 - np.float32(32))
            else:
                five = kind == Q5_K
                o = b * (176 if five else 144)
                qs0 = o + (48 if five else 16)
                d = _h2f(row[o], row[o + 1])
                dmin = _h2f(row[o + 2], row[o + 3])
                for jp in range(4):
                    sc0, mn0 = _scale_min_k4(row, o + 4, 2 * jp)
                    sc1, mn1 = _scale_min_k4(row, o + 4, 2 * jp + 1)
                    ds0, dm0, ds1, dm1 = d * sc0, dmin * mn0, d * sc1, dmin * mn1
                    base = e0 + jp * 64
                    hb = np.float32(2.0 ** (-2 * jp))
                    for i in range(32):
                        a = np.float32(row[qs0 + jp * 32 + i])
                        hi = np.floor(a * _SIXTEENTH)
                        lo = a - _SIXTEEN * hi
                        if five:
                            t = np.floor(np.float32(row[o + 16 + i]) * hb)
                            t2 = np.floor(t * np.float32(0.5))
                            lo = lo + _SIXTEEN * (t - np.float32(2) * t2)
                            hi = hi + _SIXTEEN * (t2 - np.float32(2) * np.floor(t2 * np.float32(0.5)))
                        orow[base + i] = ds0 * lo - dm0
                        orow[base + 32 + i] = ds1 * hi - dm1


def dequant(kind: int, raw: np.ndarray, out: np.ndarray) -> None:
    """The exact float32 values of GGUF block rows (the vector-lane kernel where there is one)."""
    if kind == Q4_K or kind == Q5_K or kind == Q6_K:
        qk_dequant(kind, raw, out)
    else:
        q_dequant(kind, raw, out)


@njit(fastmath=_FM, nogil=True, cache=True, parallel=True)
def q_matmul(kind: int, raw: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out[M, rows] = x[M, in] @ W.T for GGUF block rows ``raw [rows, row_bytes]``."""
    rows = raw.shape[0]
    n_m, n = x.shape
    qk = QK[kind]
    bb = BLOCK_BYTES[kind]
    nb = n // qk
    n_chunks = (rows + 31) // 32
    for c in prange(n_chunks):
        buf = np.empty(qk, np.float32)
        acc = np.empty(n_m, np.float32)
        for r in range(c * 32, min(rows, c * 32 + 32)):
            row = raw[r]
            acc[:] = 0
            for b in range(nb):
                deq_block(kind, row, b * bb, buf)
                base = b * qk
                for m in range(n_m):
                    s = np.float32(0)
                    for i in range(qk):
                        s += buf[i] * x[m, base + i]
                    acc[m] += s
            for m in range(n_m):
                out[m, r] = acc[m]


# ---------------------------------------------------------------- fast per-kind matmuls
# Vectorisable inner loops: bytes are widened to float32 and nibbles / bit fields split with
# exact float arithmetic (numba widens integer & and >> to int64, which AVX2 cannot convert to
# float in vector lanes). Per (sub-)block: ``d * sum(q x) - m * sum(x)``.



@njit(fastmath=_FM, nogil=True, cache=True)
def _group_sums(x: np.ndarray, g: int) -> np.ndarray:
    """xs[m, k] = sum of x[m, k*g:(k+1)*g] (the activations of each block)."""
    n_m, n = x.shape
    xs = np.zeros((n_m, n // g), np.float32)
    for m in range(n_m):
        for k in range(n // g):
            s = np.float32(0)
            for i in range(g):
                s += x[m, k * g + i]
            xs[m, k] = s
    return xs


@njit(fastmath=_FM, nogil=True, cache=True, parallel=True)
def q4k_matmul(raw: np.ndarray, x: np.ndarray, out: np.ndarray, five: bool) -> None:
    """Q4_K (``five``: Q5_K) rows: per 32-element sub-block ``d*sc * sum(q x) - dmin*m * sum(x)``."""
    rows = raw.shape[0]
    n_m, n = x.shape
    nb = n // 256
    bb = 176 if five else 144
    qs0 = 48 if five else 16
    xs = _group_sums(x, 32)
    n_chunks = (rows + 15) // 16
    for c in prange(n_chunks):
        for r in range(c * 16, min(rows, c * 16 + 16)):
            row = raw[r]
            for m in range(n_m):
                acc = np.float32(0)
                for b in range(nb):
                    o = b * bb
                    d = _h2f(row[o], row[o + 1])
                    dmin = _h2f(row[o + 2], row[o + 3])
                    for jp in range(4):  # a pair of sub-blocks shares 32 bytes (low / high nibbles)
                        base = o + qs0 + jp * 32
                        xo = b * 256 + jp * 64
                        s_lo = np.float32(0)
                        s_hi = np.float32(0)
                        if five:
                            hb = np.float32(2.0 ** (-2 * jp))
                            for i in range(32):
                                a = np.float32(row[base + i])
                                hi = np.floor(a * _SIXTEENTH)
                                lo = a - _SIXTEEN * hi
                                t = np.floor(np.float32(row[o + 16 + i]) * hb)  # qh >> 2jp
                                t2 = np.floor(t * np.float32(0.5))
                                b0 = t - np.float32(2) * t2  # bit 2jp
                                b1 = t2 - np.float32(2) * np.floor(t2 * np.float32(0.5))  # bit 2jp+1
                                s_lo += (lo + _SIXTEEN * b0) * x[m, xo + i]
                                s_hi += (hi + _SIXTEEN * b1) * x[m, xo + 32 + i]
                        else:
                            for i in range(32):
                                a = np.float32(row[base + i])
                                hi = np.floor(a * _SIXTEENTH)
                                s_lo += (a - _SIXTEEN * hi) * x[m, xo + i]
                                s_hi += hi * x[m, xo + 32 + i]
                        sc0, mn0 = _scale_min_k4(row, o + 4, 2 * jp)
                        sc1, mn1 = _scale_min_k4(row, o + 4, 2 * jp + 1)
                        k = b * 8 + 2 * jp
                        acc += (d * sc0) * s_lo - (dmin * mn0) * xs[m, k]
                        acc += (d * sc1) * s_hi - (dmin * mn1) * xs[m, k + 1]
                out[m, r] = acc


@njit(fastmath=_FM, nogil=True, cache=True, parallel=True)
def q6k_matmul(raw: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """Q6_K rows: per 16-element sub-block ``d*scale * sum((q - 32) x)``."""
    rows = raw.shape[0]
    n_m, n = x.shape
    nb = n // 256
    n_chunks = (rows + 15) // 16
    for c in prange(n_chunks):
        for r in range(c * 16, min(rows, c * 16 + 16)):
            row = raw[r]
            for m in range(n_m):
                acc = np.float32(0)
                for b in range(nb):
                    o = b * 210
                    d = _h2f(row[o + 208], row[o + 209])
                    for half in range(2):  # 128 elements: ql[64], qh[32]
                        ql = o + half * 64
                        qh = o + 128 + half * 32
                        xo = b * 256 + half * 128
                        for h in range(2):  # k < 16 and k >= 16: different sub-blocks
                            s0 = np.float32(0)
                            s1 = np.float32(0)
                            s2 = np.float32(0)
                            s3 = np.float32(0)
                            for kk in range(16):
                                k = h * 16 + kk
                                a = np.float32(row[ql + k])
                                a2 = np.float32(row[ql + 32 + k])
                                t = np.float32(row[qh + k])
                                ah = np.floor(a * _SIXTEENTH)
                                a2h = np.floor(a2 * _SIXTEENTH)
                                t3 = np.floor(t * np.float32(1 / 64))
                                t = t - np.float32(64) * t3
                                t2 = np.floor(t * _SIXTEENTH)
                                t = t - _SIXTEEN * t2
                                t1 = np.floor(t * np.float32(0.25))
                                t0 = t - np.float32(4) * t1
                                s0 += ((a - _SIXTEEN * ah) + _SIXTEEN * t0 - np.float32(32)) * x[m, xo + k]
                                s1 += ((a2 - _SIXTEEN * a2h) + _SIXTEEN * t1 - np.float32(32)) * x[m, xo + 32 + k]
                                s2 += (ah + _SIXTEEN * t2 - np.float32(32)) * x[m, xo + 64 + k]
                                s3 += (a2h + _SIXTEEN * t3 - np.float32(32)) * x[m, xo + 96 + k]
                            sc = o + 192 + half * 8 + h
                            acc += d * np.float32(np.int8(row[sc])) * s0
                            acc += d * np.float32(np.int8(row[sc + 2])) * s1
                            acc += d * np.float32(np.int8(row[sc + 4])) * s2
                            acc += d * np.float32(np.int8(row[sc + 6])) * s3
                out[m, r] = acc


@njit(fastmath=_FM, nogil=True, cache=True, parallel=True)
def q8_matmul(raw: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """Q8_0 rows: ``sum over blocks of d * q x``, 32 lanes summed once per row."""
    rows = raw.shape[0]
    n_m, n = x.shape
    nb = n // 32
    qv = raw.view(np.int8)
    n_chunks = (rows + 15) // 16
    for c in prange(n_chunks):
        accv = np.empty(32, np.float32)
        for r in range(c * 16, min(rows, c * 16 + 16)):
            row = raw[r]
            qrow = qv[r]
            for m in range(n_m):
                accv[:] = 0
                for b in range(nb):
                    o = b * 34
                    d = _h2f(row[o], row[o + 1])
                    for i in range(32):
                        accv[i] += d * (np.float32(qrow[o + 2 + i]) * x[m, b * 32 + i])
                s = np.float32(0)
                for i in range(32):
                    s += accv[i]
                out[m, r] = s


@njit(fastmath=_FM, nogil=True, cache=True, parallel=True)
def q4_matmul(raw: np.ndarray, x: np.ndarray, out: np.ndarray, has_min: bool) -> None:
    """Q4_0 (``d * sum((q - 8) x)``) or Q4_1 (``d * sum(q x) + m * sum(x)``) rows."""
    rows = raw.shape[0]
    n_m, n = x.shape
    nb = n // 32
    bb = 20 if has_min else 18
    q0 = 4 if has_min else 2
    off = np.float32(0) if has_min else np.float32(8)
    xs = _group_sums(x, 32)
    n_chunks = (rows + 15) // 16
    for c in prange(n_chunks):
        for r in range(c * 16, min(rows, c * 16 + 16)):
            row = raw[r]
            for m in range(n_m):
                acc = np.float32(0)
                for b in range(nb):
                    o = b * bb
                    s = np.float32(0)
                    for i in range(16):
                        a = np.float32(row[o + q0 + i])
                        hi = np.floor(a * _SIXTEENTH)
                        s += (a - _SIXTEEN * hi - off) * x[m, b * 32 + i] + (hi - off) * x[m, b * 32 + 16 + i]
                    d = _h2f(row[o], row[o + 1])
                    acc += d * s
                    if has_min:
                        acc += _h2f(row[o + 2], row[o + 3]) * xs[m, b]
                out[m, r] = acc


def matmul(kind: int, raw: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """``out[M, rows] = x @ W.T`` for GGUF block rows, the fastest kernel for the kind."""
    if kind == Q4_K or kind == Q5_K:
        q4k_matmul(raw, x, out, kind == Q5_K)
    elif kind == Q6_K:
        q6k_matmul(raw, x, out)
    elif kind == Q8_0:
        q8_matmul(raw, x, out)
    elif kind == Q4_0 or kind == Q4_1:
        q4_matmul(raw, x, out, kind == Q4_1)
    else:
        q_matmul(kind, raw, x, out)


@njit(fastmath=_FM, nogil=True, cache=True, parallel=True)
def bf16_matmul(w: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out[M, rows] = x[M, in] @ W.T for bfloat16 rows ``w`` (int16 bits ``[rows, in]``): the
    float32 with those bits in its high half is the exact value (numba has no bfloat16)."""
    rows, n = w.shape
    n_m = x.shape[0]
    n_chunks = (rows + 31) // 32
    for c in prange(n_chunks):
        buf = np.empty(n, np.int32)
        fb = buf.view(np.float32)
        for r in range(c * 32, min(rows, c * 32 + 32)):
            wr = w[r]
            for i in range(n):
                buf[i] = np.int32(wr[i]) << 16
            for m in range(n_m):
                s = np.float32(0)
                for i in range(n):
                    s += fb[i] * x[m, i]
                out[m, r] = s


@njit(nogil=True, cache=True)
def _h2f_row(src: np.ndarray, dst: np.ndarray) -> None:
    for i in range(src.shape[0]):
        dst[i] = _h2f(np.uint8(src[i] & 255), np.uint8((src[i] >> 8) & 255))


@njit(fastmath=_FM, nogil=True, cache=True, parallel=True)
def f16_matmul(w: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """out[M, rows] = x[M, in] @ W.T for float16 rows ``w`` (uint16 bits ``[rows, in]``)."""
    rows, n = w.shape
    n_m = x.shape[0]
    n_chunks = (rows + 31) // 32
    for c in prange(n_chunks):
        fb = np.empty(n, np.float32)
        for r in range(c * 32, min(rows, c * 32 + 32)):
            _h2f_row(w[r], fb)
            for m in range(n_m):
                s = np.float32(0)
                for i in range(n):
                    s += fb[i] * x[m, i]
                out[m, r] = s


# ---------------------------------------------------------------- tiles (Q8_0 / Q4_0 / Q4_1)
# Weights re-laid out ``[tile, block, element, T]`` (packed.py): the innermost loop runs over the
# T rows of a tile, 8 rows per AVX2 register with the activation broadcast, no horizontal sums;
# each lane adds in element order (no reassociation), so results do not depend on the vector width.

@njit(fastmath=_FM_ORDERED, nogil=True, cache=True)
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


@njit(fastmath=_FM_ORDERED, nogil=True, cache=True)
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


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernels every model uses, on tiny inputs; the others
    compile on first use (loading all of them costs seconds a process does not need)."""
    x = np.ones((1, 256), np.float32)
    raw = np.zeros((2, 144), np.uint8)
    dequant(Q4_K, raw, np.empty((2, 256), np.float32))
    bf16_matmul(np.zeros((2, 256), np.int16), x, np.empty((1, 2), np.float32))


def warm_up_all() -> None:
    """Every kernel (tests, and a cache to ship)."""
    x = np.ones((1, 256), np.float32)
    out = np.empty((1, 2), np.float32)
    for kind in range(8):
        raw = np.zeros((2, 256 // QK[kind] * BLOCK_BYTES[kind]), np.uint8)
        q_matmul(kind, raw, x, out)
        matmul(kind, raw, x, out)
        q_dequant(kind, raw, np.empty((2, 256), np.float32))
        dequant(kind, raw, np.empty((2, 256), np.float32))
    f16_matmul(np.zeros((2, 256), np.uint16), x, out)
    x1, out1 = np.ones(32, np.float32), np.empty(8, np.float32)
    q8_matvec(np.ones((1, 1, 32, 8), np.int8), np.ones((1, 1, 8), np.float32), x1, out1)
    d = np.ones((1, 1, 8), np.float32)
    q4_matvec(np.ones((1, 1, 16, 8), np.uint8), d, d, x1, out1)
