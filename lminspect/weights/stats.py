"""Per-tensor statistics, streamed in bounded chunks and cached on disk.

Definitions (all over the tensor as stored, converted to float32; canonical names use
the canonical tensor, e.g. one of GPT-2's split q/k/v):

- ``mean``, ``std`` (population), ``rms`` = sqrt(mean(x^2)), ``min``, ``max``,
  ``absmax``, excess ``kurtosis`` = m4 / m2^2 - 3 (0 for a Gaussian): exact, over every
  finite element (``nonfinite`` counts the others). One read of the data, in chunks:
  per chunk the four float32 power sums of d = x - shift and the extremes, the
  per-chunk partial sums combined in float64 in chunk order. ``shift`` is the mean of
  the first ``SHIFT_HEAD`` elements when that is large compared with their spread (so
  the sums do not cancel), else 0. With numba installed (the optional ``[stats]``
  extra), one compiled loop per chunk does all of it in SIMD registers
  (``stats_numba``: 32k-element chunks, min/max from the float bits as integers, see
  ``stats_kernels``); without it, the torch path: per
  512 KiB chunk numpy min and max, then d2 = d*d into a reused buffer, sum(d), sum(d2),
  dot(d2, d), dot(d2, d2). Runs of chunks are scanned by ``workers`` threads (the
  kernels, torch and numpy release the GIL; torch runs single-threaded in each); the
  result does not depend on the worker count.
- ``hist``: 64 equal bins over [min, max] and ``frac_near_zero`` = fraction with
  |x| <= 1e-6 * absmax are computed on a sample of about ``SAMPLE`` elements (every
  element for smaller tensors; ``sampled`` says which): with step = ceil(numel /
  SAMPLE), the first ceil(len / step) elements of every ``SAMPLE_BLOCK`` (32k)
  elements, copied while the chunks are scanned (a full-precision histogram would cost
  more than the rest of the scan). The compiled histogram's counts equal
  ``np.histogram``'s on the sample.
- 2-D tensors with ``svd=True``: singular values from the eigenvalues of the Gram matrix
  (W^T W or W W^T, the smaller) in float64 when min(shape) <= ``SVD_FULL_MAX``, else the
  top ``SVD_TOPK`` by ``torch.svd_lowrank`` (``svd_method`` says which). ``stable_rank``
  = sum(s^2) / max(s)^2; ``effective_rank`` = exp(entropy of s / sum(s)) (Roy & Vetterli);
  ``alpha``: power-law exponent of the eigenvalue spectrum (lambda = s^2), weightwatcher's
  fit step for step (``lminspect.weights.powerlaw``: xmin by the smallest Kolmogorov-Smirnov
  distance over every candidate, with ``alpha_xmin``, ``alpha_D``, ``alpha_tail``,
  ``alpha_sigma`` and ``alpha_warning`` beside it).

Results are cached in ``cache_dir()/stats``, one JSON per (file path, size, mtime_ns,
tensor, svd flag), so a second call is a file read.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lminspect.cachepack import read_cached, save_cached
from lminspect.fsutil import cache_dir, cache_file
from lminspect.weights.powerlaw import powerlaw_fit
from lminspect.weights.stats_kernels import CHUNK as KERNEL_CHUNK
from lminspect.weights.stats_kernels import NEG_INF_BITS, POS_INF_BITS, float_extremes, kernels

CHUNK = 1 << 17  # elements per chunk on the torch path (512 KiB of float32: chunk + its square stay in L2)
SHIFT_HEAD = 1 << 13  # elements that estimate the mean for the shift
SAMPLE = 1 << 20  # about this many elements in the histogram / near-zero sample
BINS = 64
NEAR_ZERO = 1e-6  # relative to absmax
SVD_FULL_MAX = 4096
SVD_TOPK = 256
VERSION = 3  # bump when results change (v2: 32k chunks, finite first-chunk shift; v3: weightwatcher's alpha fit)


def _identity(store: Any, name: str) -> str:
    f = Path(store.file_of(name)).resolve()
    st = f.stat()
    return f"v{VERSION}|{f}|{st.st_size}|{st.st_mtime_ns}"


def _cache_file(store: Any, name: str, svd: bool) -> Path | None:
    key = f"{_identity(store, name)}|{name}|svd={int(svd)}"
    return cache_file("stats", hashlib.sha1(key.encode()).hexdigest() + ".json")


def _pack_path(store: Any, name: str) -> Path | None:
    """The pack of results for ``name``'s file (filled inside ``cachepack.cache_batch``)."""
    return cache_file("stats", hashlib.sha1(_identity(store, name).encode()).hexdigest() + ".pack.json")


def tensor_stats(store: Any, name: str, *, svd: bool = True, use_cache: bool = True,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Statistics of ``store[name]`` (see the module docstring), cached on disk.

    ``progress(stage)`` is called before each stage of a computation (not for a cache
    hit), with a line a person can read, e.g. for a status bar."""
    return stats_and_directions(store, name, svd=svd, use_cache=use_cache, progress=progress)[0]


def stats_and_directions(store: Any, name: str, *, svd: bool = True, use_cache: bool = True, k: int = 0,
                         progress: Callable[[str], None] | None = None) -> tuple[dict[str, Any], np.ndarray | None]:
    """:func:`tensor_stats`, and when they are computed now (not cached) for a matrix by its Gram
    matrix, also its top-``k`` singular directions on the smaller dimension (``[d, k]`` float64)
    from the same eigendecomposition, which ``compare.diff`` would otherwise compute again."""
    if use_cache:
        hit = read_cached(_cache_file(store, name, svd), _pack_path(store, name), f"{name}|svd={int(svd)}")
        if hit is not None:
            return hit, None
    info = store.info(name)
    arr = store[name]
    out: dict[str, Any] = {
        "name": name,
        "canonical": info.canonical,
        "shape": list(arr.shape),
        "dtype": info.dtype,
        "bytes": info.nbytes,
    }
    if progress is not None:
        progress(f"moments and histogram over {arr.size:,} values")
    out.update(array_stats(arr))
    vectors = None
    if svd and arr.ndim == 2 and min(arr.shape) > 1:
        if progress is not None:
            progress(spectrum_stage(arr.shape))
        spec = spectrum_stats(arr, k=k)
        vectors = spec.pop("_top_vectors", None)
        out.update(spec)
    if use_cache:
        save_cached(_cache_file(store, name, svd), _pack_path(store, name), f"{name}|svd={int(svd)}", out)
    return out, vectors


def spectrum_stage(shape: tuple[int, ...]) -> str:
    """What ``spectrum_stats`` will do for a matrix of this shape, in words."""
    small = min(shape)
    if small <= SVD_FULL_MAX:
        return f"singular values: eigenvalues of the {small}x{small} Gram matrix"
    return f"singular values: top {min(SVD_TOPK, small)} by randomized SVD"


def array_stats(arr: np.ndarray, *, workers: int | None = None) -> dict[str, Any]:
    """Streamed moments, extremes, sampled histogram (see module docstring).

    ``workers``: threads scanning disjoint runs of chunks (default: the cores, or
    ``OMP_NUM_THREADS``, as torch counts its threads); results do not depend on it.
    """
    workers = max(1, int(workers if workers is not None else default_workers()))
    if kernels() is not None:  # the compiled path does not need torch (importing it takes ~1 s)
        return _array_stats(arr, workers)
    from lminspect.runtime import one_thread

    # Each scanning thread runs torch single-threaded: on L2-sized chunks an OpenMP
    # fork/join per op costs more than the op (measured 5-30x slower on the loaded
    # 2-core VM); plain Python threads (torch and numpy release the GIL) parallelise
    # over chunks instead.
    with one_thread():
        return _array_stats(arr, workers)


def default_workers() -> int:
    """torch's intra-op thread count, without importing torch when it is not loaded yet."""
    if "torch" in sys.modules:
        return int(sys.modules["torch"].get_num_threads())
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_POOL: tuple[int, Any] | None = None  # (size, ThreadPoolExecutor), created on first use


def _pool(workers: int) -> Any:
    global _POOL
    if _POOL is None or _POOL[0] < workers:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = (workers, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lminspect-stats"))
    return _POOL[1]


def _histogram(sample: np.ndarray, lo: float, hi: float, near: float) -> tuple[np.ndarray, np.ndarray, int]:
    """``np.histogram(sample, BINS, (lo, hi))`` and ``count_nonzero(|sample| <= near)``
    (float32 ``sample``), in one compiled pass when numba is there."""
    k = kernels()
    binned = sample
    try:
        edges = np.histogram_bin_edges(sample, bins=BINS, range=(lo, hi))
    except ValueError:  # a range of a few float32 steps: no 64 distinct float32 edges, so bin in float64
        binned, k = sample.astype(np.float64), None
    if sample.dtype == np.float32 and k is not None:
        hist, nz = k.hist(sample, edges, np.float32(near))
        return hist, edges, int(nz)
    hist, edges = np.histogram(binned, bins=BINS, range=(lo, hi))
    return hist, edges, int(np.count_nonzero(np.abs(sample) <= near))


# elements converted to float32 at a time for non-float32 tensors on the compiled path
CONVERT_BLOCK = 64 * KERNEL_CHUNK
# The histogram sample: the first ceil(len / step) elements of every block of
# SAMPLE_BLOCK elements. Contiguous runs copy fast while the block is in cache (an
# element-strided sample cost ~20% of the scan), and the blocks spread it over the
# whole tensor.
SAMPLE_BLOCK = KERNEL_CHUNK

_SAMPLE_BUF = threading.local()  # per calling thread: reused, so no page faults per call


def _sample_buffer(n: int, step: int) -> tuple[np.ndarray, int]:
    """This thread's sample buffer (at least big enough), and the sample's length."""
    full, rem = divmod(n, SAMPLE_BLOCK)
    size = full * -(-SAMPLE_BLOCK // step) + -(-rem // step)
    buf = getattr(_SAMPLE_BUF, "buf", None)
    if buf is None or buf.size < size:
        buf = _SAMPLE_BUF.buf = np.empty(size, np.float32)
    return buf, size


def _scan_compiled(flat: np.ndarray, lo: int, hi: int, shift: float, step: int, sample: np.ndarray) -> tuple:
    """Elements [lo, hi) of ``flat`` through the compiled kernel: (float64 (chunks, 4)
    power sums, min, max, nonfinite); fills its part of ``sample``. ``lo`` is a multiple
    of KERNEL_CHUNK (= SAMPLE_BLOCK)."""
    scan = kernels().scan
    sh32 = np.float32(shift)
    per_block = -(-SAMPLE_BLOCK // step)
    sums_all = []
    nonfinite = 0
    mn, mx = math.inf, -math.inf
    block = hi - lo if flat.dtype == np.float32 else CONVERT_BLOCK
    for b0 in range(lo, hi, block):
        x = flat[b0 : min(hi, b0 + block)]
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        nch = -(-x.size // KERNEL_CHUNK)
        sums = np.empty((nch, 4), np.float32)
        keys = np.empty((nch, 4), np.int64)
        scan(x, sh32, KERNEL_CHUNK, step, sums, keys, sample[b0 // SAMPLE_BLOCK * per_block :])
        sums = sums.astype(np.float64)
        bad = (keys[:, 1] >= POS_INF_BITS) | (keys[:, 3] >= NEG_INF_BITS)
        for j in np.flatnonzero(bad):  # chunks with inf/nan: redo over the finite elements
            c = x[j * KERNEL_CHUNK : (j + 1) * KERNEL_CHUNK]
            fin = c[np.isfinite(c)].astype(np.float64)
            nonfinite += c.size - fin.size
            d = fin - shift
            sums[j] = (d.sum(), (d * d).sum(), (d**3).sum(), (d**4).sum())
            if fin.size:
                mn, mx = min(mn, float(fin.min())), max(mx, float(fin.max()))
        good = keys[~bad]
        if good.size:
            cmn, cmx = float_extremes(int(good[:, 0].min()), int(good[:, 1].max()),
                                      int(good[:, 2].min()), int(good[:, 3].max()))
            mn, mx = min(mn, cmn), max(mx, cmx)
        sums_all.append(sums)
    return np.concatenate(sums_all), mn, mx, nonfinite


def _scan_torch(flat: np.ndarray, whole: Any, lo: int, hi: int, shift: float, step: int, sample: np.ndarray) -> tuple:
    """The path without numba. Chunks starting in [lo, hi): per chunk 4 float32 power
    sums (0-d tensors), min, max; nonfinite; fills its part of ``sample``."""
    import torch

    n = flat.size
    per_block = -(-SAMPLE_BLOCK // step)
    buf1, buf2 = torch.empty(CHUNK), torch.empty(CHUNK)
    parts: list[Any] = []  # 4 float32 sums per chunk (0-d tensors), combined in float64
    los: list[float] = []
    his: list[float] = []
    nonfinite = 0
    isfinite = math.isfinite
    hi = min(hi, n)
    # all chunk views at once (one C call each) instead of two slicings per chunk
    views = flat[lo:hi]
    views_np = np.split(views, range(CHUNK, hi - lo, CHUNK)) if hi - lo > CHUNK else [views]
    views_t = whole[lo:hi].split(CHUNK) if whole is not None else views_np
    for i, c_np, c in zip(range(lo, hi, CHUNK), views_np, views_t, strict=True):
        if whole is None:
            c_np = c_np.astype(np.float32)
            c = torch.from_numpy(c_np)
        for o in range(0, c_np.size, SAMPLE_BLOCK):
            m = -(-min(SAMPLE_BLOCK, c_np.size - o) // step)
            at = (i + o) // SAMPLE_BLOCK * per_block
            sample[at : at + m] = c_np[o : o + m]
        # numpy's min/max are the fastest single-pass extremes (torch.aminmax is ~4x
        # slower); the first pulls the chunk into L2, where everything below reads it
        mn = float(np.minimum.reduce(c_np))
        mx = float(np.maximum.reduce(c_np))
        if not (isfinite(mn) and isfinite(mx)):  # inf/nan present: drop them
            k0 = c_np.size
            c_np = c_np[np.isfinite(c_np)]
            nonfinite += k0 - c_np.size
            if c_np.size == 0:
                continue
            c = torch.from_numpy(c_np)
            mn = float(c_np.min())
            mx = float(c_np.max())
        k = c_np.size
        los.append(mn)
        his.append(mx)
        if k == CHUNK:
            d = torch.sub(c, shift, out=buf1) if shift else c
            d2 = torch.mul(d, d, out=buf2)
        else:
            d = torch.sub(c, shift, out=buf1[:k]) if shift else c
            d2 = torch.mul(d, d, out=buf2[:k])
        parts += (d.sum(), d2.sum(), torch.dot(d2, d), torch.dot(d2, d2))
    return parts, los, his, nonfinite


def _array_stats(arr: np.ndarray, workers: int = 1) -> dict[str, Any]:
    # a base-class view: slicing an np.memmap builds a memmap object per slice (slow)
    flat = np.asarray(arr).reshape(-1)
    n = int(flat.size)
    if n == 0:
        return {"numel": 0}
    step = max(1, -(-n // SAMPLE))
    # the torch path views float32 data once (no copy, never written: a read-only input
    # is fine); other dtypes are converted per chunk
    whole = None
    compiled = kernels() is not None
    if flat.dtype == np.float32 and not compiled:
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's "non-writable array" warning
            whole = torch.from_numpy(flat)
    # shift by the mean of the first SHIFT_HEAD elements (the finite ones) when the mean
    # is large compared with the spread: the float32 power sums of x - shift then do
    # not cancel (the shift need only be near the mean)
    head = flat[: min(n, SHIFT_HEAD)].astype(np.float64)
    head = head[np.isfinite(head)]
    first_mean = float(head.mean()) if head.size else 0.0
    first_std = float(head.std()) if head.size > 1 else 0.0
    shift = first_mean if abs(first_mean) > 0.1 * first_std else 0.0
    chunk = KERNEL_CHUNK if compiled else CHUNK
    n_chunks = -(-n // chunk)
    workers = min(workers, n_chunks // 4) if n_chunks >= 8 else 1
    # contiguous runs of chunks, concatenated back in chunk order: the float64
    # combination below sums the same partial sums in the same order for any workers
    bounds = [min(n, chunk * (n_chunks * w // workers)) for w in range(workers + 1)]
    buf, sample_size = _sample_buffer(n, step)
    if compiled:
        def one(w: int) -> tuple:
            return _scan_compiled(flat, bounds[w], bounds[w + 1], shift, step, buf)
    else:
        def one(w: int) -> tuple:
            return _scan_torch(flat, whole, bounds[w], bounds[w + 1], shift, step, buf)
    runs = list(_pool(workers).map(one, range(workers))) if workers > 1 else [one(0)]
    nonfinite = sum(r[-1] for r in runs)
    sample = buf[:sample_size]
    if nonfinite:
        sample = sample[np.isfinite(sample)]
    if compiled:
        s1, s2, s3, s4 = np.concatenate([r[0] for r in runs]).sum(0).tolist()
        mn = min(r[1] for r in runs)
        mx = max(r[2] for r in runs)
    else:
        import torch

        parts = [p for r in runs for p in r[0]]
        s1 = s2 = s3 = s4 = 0.0
        if parts:
            s1, s2, s3, s4 = torch.stack(parts).view(-1, 4).double().sum(0).tolist()
        mn = min((v for r in runs for v in r[1]), default=math.inf)
        mx = max((v for r in runs for v in r[2]), default=-math.inf)
    m = n - nonfinite
    if m == 0:
        return {"numel": n, "nonfinite": nonfinite}
    mu = s1 / m  # mean of the shifted data
    mean = mu + shift
    e2, e3, e4 = s2 / m, s3 / m, s4 / m
    var = max(e2 - mu * mu, 0.0)
    m4 = e4 - 4 * mu * e3 + 6 * mu * mu * e2 - 3 * mu**4
    kurt = (m4 / (var * var) - 3.0) if var > 0 else 0.0
    absmax = max(abs(mn), abs(mx))
    if mx > mn:
        hist, edges, nz = _histogram(sample, mn, mx, NEAR_ZERO * absmax)
    else:
        hist, edges = np.array([sample.size]), np.array([mn, mx])
        nz = int(np.count_nonzero(np.abs(sample) <= NEAR_ZERO * absmax))
    # count/size: the same float as np.mean of the booleans, without a float64 pass
    near = nz / sample.size if sample.size else 0.0
    rms = math.sqrt(max(var + mean * mean, 0.0))
    out = {
        "numel": n,
        "mean": mean,
        "std": math.sqrt(var),
        "min": mn,
        "max": mx,
        "absmax": absmax,
        "rms": rms,
        "kurtosis": kurt,
        "frac_near_zero": near,
        "hist": hist.tolist(),
        "hist_edges": [float(edges[0]), float(edges[-1])],
        "sampled": step > 1,
    }
    if nonfinite:
        out["nonfinite"] = nonfinite
    return out


def spectrum_stats(w: np.ndarray, k: int = 0) -> dict[str, Any]:
    """Singular values, stable rank, effective rank and power-law alpha of a matrix; with ``k``, on
    the Gram path, also ``_top_vectors``: the top-k singular directions on the smaller dimension."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
    small = min(t.shape)
    top = None
    if small <= SVD_FULL_MAX:  # (spectrum_stage describes these two branches)
        # a float64 Gram: small eigenvalues (the power-law fit's xmin) stay exact. numpy's, not
        # torch's: numpy runs ``a.T @ a`` as one symmetric rank-k update (half a multiply; 0.44 s
        # vs 0.56 s for a blocked torch Gram of the SmolLM2 embedding) and its LAPACK eigh/eigvalsh took 0.054 /
        # 0.024 s on a 576x576 Gram vs torch's 0.074 / 0.034 (1 thread, this AVX2 box)
        a64 = np.asarray(w, dtype=np.float64)
        a64 = a64 if a64.shape[0] >= a64.shape[1] else a64.T
        g = a64.T @ a64
        if k:
            evals, vecs = np.linalg.eigh(g)
            top = np.ascontiguousarray(vecs[:, ::-1][:, :min(k, small)])
        else:
            evals = np.linalg.eigvalsh(g)
        ev = np.maximum(evals, 0)[::-1].copy()
        s = np.sqrt(ev)
        method = "gram-eigh"
    else:
        k = min(SVD_TOPK, small)
        _, sv, _ = torch.svd_lowrank(t, q=k, niter=4)
        s = sv.double().numpy()
        ev = s * s
        method = f"svd_lowrank(top {k})"
    out: dict[str, Any] = {"svd_method": method, "singular_values": s[:1024].tolist()}
    if top is not None:
        out["_top_vectors"] = top
    if s.size == 0 or s[0] <= 0:
        return out
    out["spectral_norm"] = float(s[0])
    out["stable_rank"] = float((s * s).sum() / (s[0] * s[0]))
    p = s / s.sum()
    p = p[p > 0]
    out["effective_rank"] = float(np.exp(-(p * np.log(p)).sum()))
    out.update(powerlaw_fit(ev))
    return out


_LAYER_TENSOR = re.compile(r"^layers\.(\d+)\.(.+?)(\.weight)?$")

# One vocabulary: the keys of ``tensor_stats`` are the column names of the CLI's table and its
# --json, the REPL's Tables and the docs; ``frac_near_zero`` is a fraction (0 to 1) everywhere.
# The short headers the tables once used are accepted wherever a statistic is typed.
STAT_ALIASES = {"kurt": "kurtosis", "~0": "frac_near_zero", "near_zero": "frac_near_zero",
                "stable r": "stable_rank", "stable_r": "stable_rank", "eff r": "effective_rank",
                "eff_r": "effective_rank", "D": "alpha_D", "tail": "alpha_tail"}


def stat_key(name: str) -> str:
    """A statistic's name as ``tensor_stats`` spells it (``kurt`` -> ``kurtosis``)."""
    return STAT_ALIASES.get(name, name)


def layer_of(name: str) -> int | None:
    """The block number of a canonical ``layers.N....`` name, None outside the blocks."""
    m = _LAYER_TENSOR.match(name)
    return int(m.group(1)) if m else None


def layer_warnings(results: Sequence[dict[str, Any]]) -> dict[int, str]:
    """weightwatcher's alpha flags per block, for the by-layer views, components in block order:
    ``{3: "under-trained: attn.q, mlp.down; over-trained: attn.o"}`` (blocks without one left out)."""
    flags: dict[int, dict[str, list[str]]] = {}
    order = {c: k for k, c in enumerate(_COMPONENT_ORDER)}
    for r in sorted(results, key=lambda r: order.get(_component(r), len(order))):
        m = _LAYER_TENSOR.match(r.get("canonical") or r.get("name", ""))
        if m and r.get("alpha_warning"):
            flags.setdefault(int(m.group(1)), {}).setdefault(r["alpha_warning"], []).append(m.group(2))
    return {i: "; ".join(f"{w}: {', '.join(parts)}" for w, parts in f.items()) for i, f in flags.items()}


def _component(r: dict[str, Any]) -> str:
    m = _LAYER_TENSOR.match(r.get("canonical") or r.get("name", ""))
    return m.group(2) if m else ""


def by_layer(results: Sequence[dict[str, Any]], stat: str) -> tuple[list[int], dict[str, list[float | None]]]:
    """One statistic of every layer's weights, by component, for a per-layer view (the
    weightwatcher-style alpha-per-layer plot, say): ``(layers, {component: [value per
    layer]})`` from canonical names ``layers.N.<component>.weight``; biases are left out,
    a missing value is None. ``results`` are ``tensor_stats`` dicts."""
    from lminspect.errors import UserError

    stat = stat_key(stat)
    numeric = {k for r in results for k, v in r.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if stat not in numeric:
        raise UserError(f"--by-layer {stat!r}: not a statistic of these tensors "
                        f"(choose one of {', '.join(sorted(numeric)) or 'none'})")
    cells: dict[str, dict[int, float | None]] = {}
    for r in results:
        m = _LAYER_TENSOR.match(r.get("canonical") or r.get("name", ""))
        if m is None or m.group(2).endswith(".bias"):
            continue
        v = r.get(stat)
        cells.setdefault(m.group(2), {})[int(m.group(1))] = float(v) if isinstance(v, int | float) else None
    cells = {c: col for c, col in cells.items() if any(v is not None for v in col.values())}
    if not cells:
        raise UserError(f"--by-layer {stat!r}: no layer weight (layers.N...) among these tensors has it")
    layers = sorted({i for col in cells.values() for i in col})
    order = {c: k for k, c in enumerate(_COMPONENT_ORDER)}  # the order the data flows through a block
    comps = sorted(cells, key=lambda c: (order.get(c, len(order)), c))
    return layers, {c: [cells[c].get(i) for i in layers] for c in comps}


_COMPONENT_ORDER = ("attn_norm", "attn.q", "attn.k", "attn.v", "attn.o", "mlp_norm", "mlp.gate", "mlp.up", "mlp.down")


def scan(store: Any, names: list[str], *, svd: bool = True, progress: Any = None) -> list[dict[str, Any]]:
    """Stats for many tensors; ``progress(i, name)`` is called before each."""
    from lminspect.cachepack import cache_batch

    out = []
    with cache_batch():  # a few pack files, not one fsync'd file per tensor
        for i, name in enumerate(names):
            if progress is not None:
                progress(i, name)
            out.append(tensor_stats(store, name, svd=svd))
    return out


def clear_cache() -> int:
    """Remove cached statistics; return how many files were removed."""
    from lminspect.cachepack import forget_cache_packs

    forget_cache_packs()
    d = cache_dir() / "stats"
    n = 0
    if d.is_dir():
        for p in d.glob("*.json"):
            try:
                os.unlink(p)
                n += 1
            except OSError:
                pass
    return n
