"""Per-tensor statistics, streamed in bounded chunks and cached on disk.

Definitions (all over the tensor as stored, converted to float32; canonical names use
the canonical tensor, e.g. one of GPT-2's split q/k/v):

- ``mean``, ``std`` (population), ``rms`` = sqrt(mean(x^2)), ``min``, ``max``,
  ``absmax``, excess ``kurtosis`` = m4 / m2^2 - 3 (0 for a Gaussian): exact, over every
  finite element (``nonfinite`` counts the others). One pass over chunks of ``CHUNK``
  elements (512 KiB: the chunk stays in L2, so only the first per-chunk reduction reads
  RAM): numpy min, max (the first pulls the chunk into L2), then the four float32 power
  sums of d: with numba installed (optional), one fused SIMD loop per chunk (d, d^2,
  d^3, d^4 in registers); without it, torch: d2 = d*d into a reused buffer, sum(d),
  sum(d2), dot(d2, d), dot(d2, d2). The per-chunk partial sums are combined in float64
  in chunk order. When the mean is large compared with the spread, d = x - (first-chunk
  mean), to avoid cancellation (free in the numba loop; one more elementwise pass in
  the torch path); else d = x. Runs of chunks are scanned by ``workers``
  threads (torch and numpy release the GIL; each runs torch single-threaded); the
  result does not depend on the worker count.
- ``hist``: 64 equal bins over [min, max] and ``frac_near_zero`` = fraction with
  |x| <= 1e-6 * absmax are computed on a uniform strided sample of at most
  ``SAMPLE`` elements (every element for smaller tensors; ``sampled`` says which).
  A full-precision histogram costs ~10x the rest of the scan, so it is sampled. With
  numba, both come from one pass over the sample (counts identical to ``np.histogram``:
  each bin is settled against numpy's own edges).
- 2-D tensors with ``svd=True``: singular values from the eigenvalues of the Gram matrix
  (W^T W or W W^T, the smaller) in float64 when min(shape) <= ``SVD_FULL_MAX``, else the
  top ``SVD_TOPK`` by ``torch.svd_lowrank`` (``svd_method`` says which). ``stable_rank``
  = sum(s^2) / max(s)^2; ``effective_rank`` = exp(entropy of s / sum(s)) (Roy & Vetterli);
  ``alpha``: power-law exponent of the eigenvalue spectrum (lambda = s^2) as in
  weightwatcher: for each candidate xmin the MLE alpha = 1 + n / sum(log(lambda/xmin))
  over the tail lambda >= xmin, and the xmin with the smallest Kolmogorov-Smirnov distance
  between the empirical tail and the fitted power law wins (``alpha_xmin``, ``alpha_ks``).

Results are cached in ``cache_dir()/stats``, one JSON per (file path, size, mtime_ns,
tensor, svd flag), so a second call is a file read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from lminspect.fsutil import atomic_write_text, cache_dir

CHUNK = 1 << 17  # elements per reduction chunk (512 KiB of float32: chunk + its square stay in L2)
SAMPLE = 1 << 20  # max elements in the histogram / near-zero sample
BINS = 64
NEAR_ZERO = 1e-6  # relative to absmax
SVD_FULL_MAX = 4096
SVD_TOPK = 256
VERSION = 1


def _cache_file(store: Any, name: str, svd: bool) -> Path:
    f = Path(store.file_of(name)).resolve()
    st = f.stat()
    key = f"v{VERSION}|{f}|{st.st_size}|{st.st_mtime_ns}|{name}|svd={int(svd)}"
    return cache_dir() / "stats" / (hashlib.sha1(key.encode()).hexdigest() + ".json")


def tensor_stats(store: Any, name: str, *, svd: bool = True, use_cache: bool = True) -> dict[str, Any]:
    """Statistics of ``store[name]`` (see the module docstring), cached on disk."""
    path = _cache_file(store, name, svd) if use_cache else None
    if path is not None and path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            pass
    info = store.info(name)
    arr = store[name]
    out: dict[str, Any] = {
        "name": name,
        "canonical": info.canonical,
        "shape": list(arr.shape),
        "dtype": info.dtype,
        "bytes": info.nbytes,
    }
    out.update(array_stats(arr))
    if svd and arr.ndim == 2 and min(arr.shape) > 1:
        out.update(spectrum_stats(arr))
    if path is not None:
        atomic_write_text(path, json.dumps(out))
    return out


def array_stats(arr: np.ndarray, *, workers: int | None = None) -> dict[str, Any]:
    """Streamed moments, extremes, sampled histogram (see module docstring).

    ``workers``: threads scanning disjoint runs of chunks (default: torch's intra-op
    thread count, i.e. the cores or ``OMP_NUM_THREADS``); results do not depend on it.
    """
    import torch

    threads = torch.get_num_threads()
    if workers is None:
        workers = threads
    # Each scanning thread runs torch single-threaded: on L2-sized chunks an OpenMP
    # fork/join per op costs more than the op (measured 5-30x slower on the loaded
    # 2-core VM); plain Python threads (torch and numpy release the GIL) parallelise
    # over chunks instead.
    if threads != 1:
        torch.set_num_threads(1)
    try:
        return _array_stats(arr, max(1, int(workers)))
    finally:
        if threads != 1:
            torch.set_num_threads(threads)


_POOL: tuple[int, Any] | None = None  # (size, ThreadPoolExecutor), created on first use


def _pool(workers: int) -> Any:
    global _POOL
    if _POOL is None or _POOL[0] < workers:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = (workers, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lminspect-stats"))
    return _POOL[1]


_PSUMS: Any = None  # numba kernel, or False when numba is not importable


def _psums_kernel() -> Any:
    """The fused power-sum kernel (numba, compiled on first use), or None without numba."""
    global _PSUMS
    if _PSUMS is None:
        try:
            import numba
        except ImportError:
            _PSUMS = False
        else:

            @numba.njit(nogil=True, fastmath=True, cache=True)
            def psums(c: np.ndarray, sh: np.float32) -> tuple:
                # one read of the chunk, 4 float32 sums in SIMD registers (fastmath lets
                # LLVM reassociate, i.e. vectorise; finite data only: callers drop inf/nan)
                s1 = np.float32(0.0)
                s2 = np.float32(0.0)
                s3 = np.float32(0.0)
                s4 = np.float32(0.0)
                for i in range(c.size):
                    d = c[i] - sh
                    d2 = d * d
                    s1 += d
                    s2 += d2
                    s3 += d2 * d
                    s4 += d2 * d2
                return s1, s2, s3, s4

            @numba.njit(nogil=True, cache=True)
            def hist(a: np.ndarray, edges: np.ndarray, near: np.float32) -> tuple:
                # np.histogram's uniform-bin counts: estimate the bin, then settle it by
                # comparing with the same edges numpy uses (so the counts are identical);
                # plus the count of |v| <= near (float32 compare, as numpy does it)
                nb = edges.size - 1
                out = np.zeros(nb, np.int64)
                nz = 0
                lo = edges[0]
                hi = edges[nb]
                scale = nb / (float(hi) - float(lo))
                for i in range(a.size):
                    v = a[i]
                    if abs(v) <= near:
                        nz += 1
                    if not (v >= lo and v <= hi):
                        continue
                    k = int((float(v) - float(lo)) * scale)
                    k = min(max(k, 0), nb - 1)
                    while k > 0 and v < edges[k]:
                        k -= 1
                    while k < nb - 1 and v >= edges[k + 1]:
                        k += 1
                    out[k] += 1
                return out, nz

            _PSUMS = psums
            _HIST[0] = hist
    return _PSUMS or None


_HIST: list[Any] = [None]  # numba histogram kernel (set with _PSUMS)


def _histogram(sample: np.ndarray, lo: float, hi: float, near: float) -> tuple[np.ndarray, np.ndarray, int]:
    """``np.histogram(sample, BINS, (lo, hi))`` and ``count_nonzero(|sample| <= near)``
    (float32 ``sample``), in one numba pass when numba is there."""
    if sample.dtype != np.float32 or _psums_kernel() is None or _HIST[0] is None:
        hist, edges = np.histogram(sample, bins=BINS, range=(lo, hi))
        return hist, edges, int(np.count_nonzero(np.abs(sample) <= near))
    edges = np.histogram_bin_edges(sample, bins=BINS, range=(lo, hi))
    hist, nz = _HIST[0](sample, edges, np.float32(near))
    return hist, edges, int(nz)


def _scan_chunks(flat: np.ndarray, whole: Any, lo: int, hi: int, shift: float, step: int) -> tuple:
    """Chunks starting in [lo, hi): per chunk 4 float32 power sums, min, max, sample."""
    import torch

    n = flat.size
    psums = _psums_kernel()
    sh32 = np.float32(shift)
    buf1, buf2 = torch.empty(CHUNK), torch.empty(CHUNK)
    parts: list[Any] = []  # 4 float32 sums per chunk (0-d tensors or floats), combined in float64
    los: list[float] = []
    his: list[float] = []
    samples = []
    nonfinite = 0
    isfinite = math.isfinite
    hi = min(hi, n)
    # all chunk views at once (one C call each) instead of two slicings per chunk
    views = flat[lo:hi]
    views_np = np.split(views, range(CHUNK, hi - lo, CHUNK)) if hi - lo > CHUNK else [views]
    views_t = whole[lo:hi].split(CHUNK) if whole is not None else views_np
    if psums is not None:  # numba: no torch views needed
        views_t = views_np
    for i, c_np, c in zip(range(lo, hi, CHUNK), views_np, views_t, strict=True):
        if psums is not None:
            if c_np.dtype != np.float32:
                c_np = c_np.astype(np.float32)
        elif whole is None:
            c_np = c_np.astype(np.float32)
            c = torch.from_numpy(c_np)
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
            c = torch.from_numpy(c_np) if psums is None else c_np
            mn = float(c_np.min())
            mx = float(c_np.max())
        k = c_np.size
        samples.append(c_np[(-i) % step :: step].copy())
        los.append(mn)
        his.append(mx)
        if psums is not None:
            parts += psums(c_np, sh32)
            continue
        if k == CHUNK:
            d = torch.sub(c, shift, out=buf1) if shift else c
            d2 = torch.mul(d, d, out=buf2)
        else:
            d = torch.sub(c, shift, out=buf1[:k]) if shift else c
            d2 = torch.mul(d, d, out=buf2[:k])
        parts += (d.sum(), d2.sum(), torch.dot(d2, d), torch.dot(d2, d2))
    return parts, los, his, samples, nonfinite


def _array_stats(arr: np.ndarray, workers: int = 1) -> dict[str, Any]:
    import torch

    # a base-class view: slicing an np.memmap builds a memmap object per slice (slow)
    flat = np.asarray(arr).reshape(-1)
    n = int(flat.size)
    if n == 0:
        return {"numel": 0}
    step = max(1, -(-n // SAMPLE))
    # float32 data is viewed by torch once (no copy, never written: a read-only input
    # is fine); other dtypes are converted per chunk
    whole = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "non-writable array" warning
        t = torch.from_numpy(np.ascontiguousarray(flat[: min(n, CHUNK)], dtype=np.float32))
        if flat.dtype == np.float32:
            whole = torch.from_numpy(flat)
    t64 = t.double()
    first_mean = float(t64.mean())
    first_std = float(t64.std()) if t64.numel() > 1 else 0.0
    shift = first_mean if abs(first_mean) > 0.1 * first_std else 0.0
    n_chunks = -(-n // CHUNK)
    workers = min(workers, n_chunks // 4) if n_chunks >= 8 else 1
    # contiguous runs of chunks, concatenated back in chunk order: the float64
    # combination below sums the same partial sums in the same order for any workers
    bounds = [CHUNK * (n_chunks * w // workers) for w in range(workers + 1)]
    if workers > 1:
        runs = list(_pool(workers).map(
            lambda w: _scan_chunks(flat, whole, bounds[w], bounds[w + 1], shift, step), range(workers)
        ))
    else:
        runs = [_scan_chunks(flat, whole, 0, n, shift, step)]
    parts = [p for r in runs for p in r[0]]
    los = [v for r in runs for v in r[1]]
    his = [v for r in runs for v in r[2]]
    samples = [v for r in runs for v in r[3]]
    nonfinite = sum(r[4] for r in runs)
    s1 = s2 = s3 = s4 = 0.0
    if parts:
        if isinstance(parts[0], torch.Tensor):
            s1, s2, s3, s4 = torch.stack(parts).view(-1, 4).double().sum(0).tolist()
        else:
            s1, s2, s3, s4 = np.array(parts, dtype=np.float64).reshape(-1, 4).sum(0).tolist()
    mn = min(los) if los else math.inf
    mx = max(his) if his else -math.inf
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
    sample = np.concatenate(samples) if samples else np.zeros(0, np.float32)
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


def spectrum_stats(w: np.ndarray) -> dict[str, Any]:
    """Singular values, stable rank, effective rank and power-law alpha of a matrix."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
    small = min(t.shape)
    if small <= SVD_FULL_MAX:
        g = t.T @ t if t.shape[0] >= t.shape[1] else t @ t.T
        ev = torch.linalg.eigvalsh(g.double()).clamp_min(0).flip(0).numpy()
        s = np.sqrt(ev)
        method = "gram-eigh"
    else:
        k = min(SVD_TOPK, small)
        _, sv, _ = torch.svd_lowrank(t, q=k, niter=4)
        s = sv.double().numpy()
        ev = s * s
        method = f"svd_lowrank(top {k})"
    out: dict[str, Any] = {"svd_method": method, "singular_values": s[:1024].tolist()}
    if s.size == 0 or s[0] <= 0:
        return out
    out["spectral_norm"] = float(s[0])
    out["stable_rank"] = float((s * s).sum() / (s[0] * s[0]))
    p = s / s.sum()
    p = p[p > 0]
    out["effective_rank"] = float(np.exp(-(p * np.log(p)).sum()))
    out.update(powerlaw_alpha(ev))
    return out


def powerlaw_alpha(ev: np.ndarray, min_tail: int = 10) -> dict[str, Any]:
    """weightwatcher-style power-law fit of eigenvalues: MLE alpha, xmin by KS distance."""
    x = np.sort(np.asarray(ev, dtype=np.float64))
    x = x[x > x.max() * 1e-12] if x.size else x
    n = x.size
    if n < min_tail + 1:
        return {}
    logs = np.log(x)
    # suffix sums of log(x) for tails starting at each candidate index
    suffix = np.cumsum(logs[::-1])[::-1]
    best: tuple[float, float, float] | None = None
    for i in range(0, n - min_tail):
        xmin = x[i]
        tail = n - i
        denom = suffix[i] - tail * logs[i]
        if denom <= 0:
            continue
        alpha = float(1.0 + tail / denom)
        xs = x[i:]
        fit = 1.0 - (xs / xmin) ** (1.0 - alpha)
        emp = np.arange(tail) / tail
        ks = float(np.max(np.abs(emp - fit)))
        if best is None or ks < best[2]:
            best = (alpha, float(xmin), ks)
    if best is None:
        return {}
    return {"alpha": best[0], "alpha_xmin": best[1], "alpha_ks": best[2]}


def scan(store: Any, names: list[str], *, svd: bool = True, progress: Any = None) -> list[dict[str, Any]]:
    """Stats for many tensors; ``progress(i, name)`` is called before each."""
    out = []
    for i, name in enumerate(names):
        if progress is not None:
            progress(i, name)
        out.append(tensor_stats(store, name, svd=svd))
    return out


def clear_cache() -> int:
    """Remove cached statistics; return how many files were removed."""
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
