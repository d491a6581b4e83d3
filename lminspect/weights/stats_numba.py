"""The compiled statistics kernels (numba: the optional ``[stats]`` extra).

Imported only through ``stats_kernels.kernels()``, which falls back to numpy/torch when
numba is missing or these fail to compile. Module-level functions, so numba's disk
cache (``cache=True``) keeps the compiled code between processes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit
from numba.core import types
from numba.extending import intrinsic


@intrinsic
def prefer_wide_vectors(typingctx: Any) -> tuple:
    # Marks the calling function "prefer-vector-width"="512". LLVM's tuning for
    # AVX-512 CPUs prefers 256-bit vectors; for this arithmetic-heavy scan 512-bit
    # ones are what let it keep up with RAM (measured 10-12 -> ~15.5 GB/s, against
    # 16.5 for a plain numpy sum). A preference only: LLVM clamps it to the vectors
    # the CPU has. llvmlite knows no string attributes, hence set.add.
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        try:
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        except TypeError:  # another llvmlite: keep LLVM's default width
            pass
        return context.get_dummy_value()

    return types.void(), codegen


@njit(nogil=True, fastmath=True, cache=True, inline="always")
def chunk_sums(c: np.ndarray, ci: np.ndarray, cu: np.ndarray, sh: np.float32) -> tuple:
    # One read of the chunk. The loop must start at 0 over whole (sliced) arrays:
    # with a (lo, hi) range numba's negative-index checks stop the vectoriser. The
    # integer compares must stay int32/uint32: any arithmetic on them widens to
    # int64 in numba and halves the lanes. fastmath lets LLVM reassociate the sums
    # (vectorised float32 lanes); nonfinite chunks are redone by the caller.
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    s3 = np.float32(0.0)
    s4 = np.float32(0.0)
    imn = ci[0]
    imx = ci[0]
    umn = cu[0]
    umx = cu[0]
    for i in range(c.size):
        b = ci[i]
        if b < imn:
            imn = b
        if b > imx:
            imx = b
        u = cu[i]
        if u < umn:
            umn = u
        if u > umx:
            umx = u
        d = c[i] - sh
        d2 = d * d
        s1 += d
        s2 += d2
        s3 += d2 * d
        s4 += d2 * d2
    return s1, s2, s3, s4, imn, imx, umn, umx


@njit(nogil=True, fastmath=True, cache=True)
def scan(
    x: np.ndarray,
    sh: np.float32,
    chunk: int,
    step: int,
    sums: np.ndarray,
    keys: np.ndarray,
    sample: np.ndarray,
) -> None:
    # Per chunk j of the float32 array x: sums[j] = the four power sums, keys[j] =
    # (min, max) of the int32 bits and (min, max) of the uint32 bits; and, while the
    # chunk is in cache, its first ceil(len / step) elements into
    # sample[j * ceil(chunk / step):].
    prefer_wide_vectors()
    xi = x.view(np.int32)
    xu = x.view(np.uint32)
    n = x.size
    per_chunk = (chunk + step - 1) // step
    for j in range((n + chunk - 1) // chunk):
        lo = j * chunk
        hi = min(n, lo + chunk)
        s1, s2, s3, s4, imn, imx, umn, umx = chunk_sums(x[lo:hi], xi[lo:hi], xu[lo:hi], sh)
        sums[j, 0] = s1
        sums[j, 1] = s2
        sums[j, 2] = s3
        sums[j, 3] = s4
        keys[j, 0] = imn
        keys[j, 1] = imx
        keys[j, 2] = umn
        keys[j, 3] = umx
        m = (hi - lo + step - 1) // step
        sample[j * per_chunk : j * per_chunk + m] = x[lo : lo + m]


@njit(nogil=True, cache=True)
def hist_table(a: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # counts from the edge table: estimate the bin, settle it against the edges
    nb = edges.size - 1
    out = np.zeros(nb, np.int64)
    lo = edges[0]
    hi = edges[nb]
    scale = nb / (float(hi) - float(lo))
    for i in range(a.size):
        v = a[i]
        if not (v >= lo and v <= hi):
            continue
        k = int((float(v) - float(lo)) * scale)
        k = min(max(k, 0), nb - 1)
        while k > 0 and v < edges[k]:
            k -= 1
        while k < nb - 1 and v >= edges[k + 1]:
            k += 1
        out[k] += 1
    return out


@njit(nogil=True, cache=True)
def hist(a: np.ndarray, edges: np.ndarray, near: np.float32) -> tuple:
    # np.histogram's counts for float32 a within [edges[0], edges[-1]] (the sample lies
    # within its tensor's exact min/max), plus the count of |v| <= near. A float32 bin
    # estimate in SIMD registers is right unless the value sits within `margin` of a
    # bin boundary (its own rounding, plus how far numpy's float32 edges stray from
    # evenly spaced); those few are settled against the edge table as numpy does it.
    # Edges too coarse for that (a huge offset against a tiny range): table only.
    prefer_wide_vectors()
    nb = edges.size - 1
    nz = 0
    for i in range(a.size):
        nz += abs(a[i]) <= near
    lo = edges[0]
    scale = np.float32(nb / (float(edges[nb]) - float(lo)))
    stray = 0.0
    for j in range(nb + 1):
        stray = max(stray, abs((float(edges[j]) - float(lo)) * float(scale) - j))
    margin = np.float32(1e-3 + stray)
    if margin > 0.25:
        return hist_table(a, edges), nz
    top = np.int32(nb - 1)
    counts = np.zeros((4, nb), np.int64)  # 4 rows: consecutive hits to a bin do not wait on each other
    block = 2048
    idx = np.empty(block, np.int32)
    close = np.empty(block, np.int32)
    for b in range(0, a.size, block):
        x = a[b : b + block]
        for i in range(x.size):  # vectorised
            f = (x[i] - lo) * scale
            k = min(max(np.int32(f), np.int32(0)), top)
            r = f - np.float32(k)
            idx[i] = k
            close[i] = np.int32((r < margin) | (r > np.float32(1.0) - margin))
        for i in range(x.size):
            if close[i]:  # rare
                v = x[i]
                k = idx[i]
                while k > 0 and v < edges[k]:
                    k -= 1
                while k < nb - 1 and v >= edges[k + 1]:
                    k += 1
                idx[i] = k
        for i in range(x.size):
            counts[i & 3, idx[i]] += 1
    return counts.sum(0), nz


def warm_up(chunk: int) -> None:
    """Compile (or load from numba's cache) now, so a failure shows here, not mid-scan.

    ``chunk`` is the scan's chunk size (``stats_kernels.CHUNK``), passed in so this module
    imports nothing of lminspect's.
    """
    x = np.linspace(-1, 1, 100, dtype=np.float32)
    sums, keys, sample = np.empty((1, 4), np.float32), np.empty((1, 4), np.int64), np.empty(100, np.float32)
    scan(x, np.float32(0), chunk, 1, sums, keys, sample)
    x.flags.writeable = False  # memory-mapped weights are read-only: numba compiles those apart
    scan(x, np.float32(0), chunk, 1, sums, keys, sample)
    edges = np.histogram_bin_edges(x, bins=4, range=(-1.0, 1.0))
    hist(x, edges, np.float32(0))
