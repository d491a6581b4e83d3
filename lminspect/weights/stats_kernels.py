"""Compiled kernels for the statistics scan (numba, the optional ``[stats]`` extra).

``kernels()`` returns them (``stats_numba``, compiled on first use and cached on disk
by numba), or None when numba is not importable; ``lminspect.weights.stats`` then takes its
numpy/torch path. Both give the same statistics (tested).

The scan kernel reads each element once and keeps nine reductions in SIMD registers:
the four float32 power sums of d = x - shift, and the min and max of the float's bits
read as int32 and as uint32. Float min/max reductions do not vectorise in LLVM (NaN
semantics), integer ones do; the float extremes follow from the integer ones (see
``float_extremes``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lminspect.compiled import load_kernels

# elements per chunk: the float32 partial sums of one chunk are combined in float64, in
# chunk order. 32k (128 KiB) measured fastest from RAM (up to 78% of a plain numpy sum,
# against ~62% at 128k) and keeps each float32 accumulator lane short.
CHUNK = 1 << 15

_KERNELS: Any = None  # the stats_numba module, or False without numba


def kernels() -> Any:
    """The compiled kernels (``scan``, ``hist``), or None without numba."""
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = load_kernels("lminspect.weights.stats_numba", lambda m: m.warm_up(CHUNK), "statistics",
                                "numpy/torch")
    return _KERNELS or None


POS_INF_BITS = 0x7F800000  # +inf as int32; larger int32 bits are +nan
NEG_INF_BITS = 0xFF800000  # -inf as uint32; larger uint32 bits are -nan


def _bits_to_float(bits: int) -> float:
    return float(np.array([bits & 0xFFFFFFFF], np.uint32).view(np.float32)[0])


def float_extremes(imn: int, imx: int, umn: int, umx: int) -> tuple[float, float] | None:
    """(min, max) of float32 values from the min/max of their bits read as int32 and as
    uint32, or None when an inf or nan is among them.

    Non-negative floats (sign bit 0) order like their int32 bits; negative floats have
    uint32 bits >= 2^31 that grow with the magnitude. So the max is the largest int32
    when that is >= 0 (some value is non-negative), else the negative with the smallest
    magnitude (the smallest uint32); the min is the largest uint32 when that is >= 2^31
    (some value is negative), else the smallest int32.
    """
    if imx >= POS_INF_BITS or umx >= NEG_INF_BITS:
        return None
    mx = _bits_to_float(imx) if imx >= 0 else _bits_to_float(umn)
    mn = _bits_to_float(umx) if umx >= 0x80000000 else _bits_to_float(imn)
    return mn, mx
