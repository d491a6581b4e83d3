"""Tensor-by-tensor difference of two models (``lminspect diff A B``, ``li.open(a).diff(b)``).

Tensors are matched by canonical name (stored names for tensors without one). Where a model
was grown, the shapes differ: the overlapping block (``a[:r, :c]`` vs ``b[:r, :c]``, the leading
rows and columns, where growth keeps the old weights) is compared and ``match`` says so.

Per matched tensor, over the compared block (A the first model, B the second):

- ``rel_change`` = ||B - A|| / ||A|| (Frobenius), ``cosine`` = <A, B> / (||A|| ||B||) over the
  flattened tensors, ``max_abs_diff`` = max |B - A|: one streamed pass over both, in chunks of
  about ``CHUNK`` elements (each chunk widened to float64 for the sums), so memory holds one
  pair of tensors (memmap views for F32 files) and a chunk;
- ``d_std``, ``d_kurtosis``, ``d_stable_rank``, ``d_alpha``: B's statistic minus A's, both from
  the single-model statistics (``weights/stats.py``, cached on disk; whole tensors);
- for matrices (``directions=True``): the top-``TOP_K`` singular directions of each side on the
  matrix's smaller dimension (eigenvectors of the float64 Gram matrix, or randomized SVD above
  ``stats.SVD_FULL_MAX``), ``subspace_overlap`` = ||V_A^T V_B||_F^2 / k, the mean squared cosine
  of the principal angles between the two top-k subspaces (1: same subspace; about k/d for
  unrelated ones), and ``top_cos`` = |cos| between the two top singular vectors (sign-free).

Results are cached per pair in ``cache_dir()/diff``, keyed by both files' identity (path, size,
mtime) and the tensor names, like the single-model statistics.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lminspect.cachepack import read_cached, save_cached
from lminspect.fsutil import cache_file

CHUNK = 1 << 18  # elements per streamed chunk (1 MiB of float32 per side)
TOP_K = 8  # singular directions compared per matrix
STAT_DELTAS = ("std", "kurtosis", "stable_rank", "alpha")
VERSION = 2  # bump when results change (v2: float64 sums per chunk)
DIFF_COLUMNS = ("name", "match", "shape", "rel_change", "cosine", "max_abs_diff", "subspace_overlap", "top_cos",
                *(f"d_{s}" for s in STAT_DELTAS))


@dataclass(frozen=True)
class Pair:
    """One tensor present in both models: its name and shape on each side."""

    name: str
    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]

    @property
    def block(self) -> tuple[int, ...] | None:
        """The compared block's shape when the shapes differ (same rank), else None."""
        if self.shape_a == self.shape_b or len(self.shape_a) != len(self.shape_b):
            return None
        return tuple(min(x, y) for x, y in zip(self.shape_a, self.shape_b, strict=True))

    @property
    def match(self) -> str:
        if self.shape_a == self.shape_b:
            return "same"
        if self.block is None:
            return "rank differs"
        fmt = "x".join
        return f"overlap {fmt(map(str, self.block))} of {fmt(map(str, self.shape_a))} | {fmt(map(str, self.shape_b))}"


@dataclass
class Matching:
    pairs: list[Pair]
    only_a: list[str]
    only_b: list[str]


def tensor_names(store: Any) -> dict[str, tuple[int, ...]]:
    """``{name: shape}``: canonical names, plus stored names that have no canonical one."""
    out = {c: store.info(c).shape for c in store.canonical_names()}
    for n in store.keys():
        info = store.info(n)
        if info.canonical is None:
            out[n] = info.shape
    return out


def match_tensors(a: Any, b: Any) -> Matching:
    """Pair the tensors of two stores by name (A's order), listing those only in one."""
    na, nb = tensor_names(a), tensor_names(b)
    pairs = [Pair(n, na[n], nb[n]) for n in na if n in nb]
    return Matching(pairs, [n for n in na if n not in nb], [n for n in nb if n not in na])


def _pair_identity(a: Any, b: Any, name: str) -> str:
    ids = []
    for store in (a, b):
        f = Path(store.file_of(name)).resolve()
        st = f.stat()
        ids.append(f"{f}|{st.st_size}|{st.st_mtime_ns}")
    return f"v{VERSION}|{ids[0]}|{ids[1]}"


def _cache_file(a: Any, b: Any, name: str, directions: bool) -> Path | None:
    key = f"{_pair_identity(a, b, name)}|{name}|dirs={int(directions)}"
    return cache_file("diff", hashlib.sha1(key.encode()).hexdigest() + ".json")


def _pack_path(a: Any, b: Any, name: str) -> Path | None:
    """The pack of rows for this pair of files (filled inside ``cachepack.cache_batch``)."""
    return cache_file("diff", hashlib.sha1(_pair_identity(a, b, name).encode()).hexdigest() + ".pack.json")


def _side_stats(a: Any, b: Any, pair: Pair, directions: bool) -> tuple[tuple[dict, dict] | None, list]:
    """Both sides' single-model statistics and, where they are computed now from a Gram matrix, the
    top singular directions of the same eigendecomposition ([None, None] otherwise): a same-shape
    matrix's diff then costs one Gram + eigh per side, not two."""
    if not (directions and pair.block is None and len(pair.shape_a) == 2 and min(pair.shape_a) > 1):
        return None, [None, None]
    from lminspect.weights.stats import stats_and_directions

    (sa, va), (sb, vb) = (stats_and_directions(s, pair.name, svd=True, k=TOP_K) for s in (a, b))
    return (sa, sb), [va, vb]


def diff_pair(a: Any, b: Any, pair: Pair, *, directions: bool = True, use_cache: bool = True) -> dict[str, Any]:
    """The numbers of one matched tensor (see the module docstring), cached on disk."""
    if use_cache:
        hit = read_cached(_cache_file(a, b, pair.name, directions), _pack_path(a, b, pair.name),
                          f"{pair.name}|dirs={int(directions)}")
        if hit is not None:
            return hit
    out: dict[str, Any] = {"name": pair.name, "canonical": pair.name, "match": pair.match,
                           "shape": list(pair.block or pair.shape_a)}
    side_stats, vecs = _side_stats(a, b, pair, directions)
    if pair.block is None and pair.shape_a != pair.shape_b:
        out.update(shape_a=list(pair.shape_a), shape_b=list(pair.shape_b))
    else:
        xa, xb = a[pair.name], b[pair.name]
        if pair.block is not None:
            sl = tuple(slice(0, k) for k in pair.block)
            xa, xb = xa[sl], xb[sl]
        out.update(array_diff(xa, xb))
        if directions and xa.ndim == 2 and min(xa.shape) > 1:
            out.update(direction_overlap(xa, xb, vectors=vecs))
        del xa, xb
    out.update(stat_deltas(a, b, pair.name, svd=directions, stats=side_stats))
    if use_cache:
        save_cached(_cache_file(a, b, pair.name, directions), _pack_path(a, b, pair.name),
                    f"{pair.name}|dirs={int(directions)}", out)
    return out


def _flat_ok(x: np.ndarray) -> bool:
    return bool(x.flags.c_contiguous) or x.ndim < 2


def _chunks(x: np.ndarray, flat: bool | None = None) -> Any:
    """Consecutive pieces of about ``CHUNK`` elements: flat ranges of a contiguous array (views on a
    memmap), row ranges of a block. Two same-shape arrays must be cut alike: pass the same
    ``flat`` for both (a contiguous side and a grown model's block are cut by rows)."""
    x = np.asarray(x)
    if flat if flat is not None else _flat_ok(x):
        flat = x.reshape(-1)
        for i in range(0, max(1, flat.size), CHUNK):
            yield flat[i : i + CHUNK]
        return
    rows = x.reshape(-1, x.shape[-1])  # a block cut on its last axes: copies only if it must
    step = max(1, CHUNK // max(1, rows.shape[1]))
    for r0 in range(0, rows.shape[0], step):
        yield rows[r0 : r0 + step]


def _tensor(x: np.ndarray) -> Any:
    """A float32 torch view of an array (no copy for a contiguous float32 memmap)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "non-writable array" warning: it is only read
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def array_diff(xa: np.ndarray, xb: np.ndarray) -> dict[str, Any]:
    """rel_change, cosine and max |B-A| of two same-shape arrays, streamed chunk by chunk."""
    import torch

    aa = bb = ab = dd = 0.0
    mx = 0.0
    xa, xb = np.asarray(xa), np.asarray(xb)
    flat = _flat_ok(xa) and _flat_ok(xb)
    for ca, cb in zip(_chunks(xa, flat), _chunks(xb, flat), strict=True):
        # float64 per chunk: a float32 dot over 256k elements loses ~1e-3 (its SIMD lanes
        # accumulate long runs), visible in a cosine of 0.99995
        ta, tb = _tensor(ca).reshape(-1).double(), _tensor(cb).reshape(-1).double()
        d = tb - ta
        aa += float(torch.dot(ta, ta))
        bb += float(torch.dot(tb, tb))
        ab += float(torch.dot(ta, tb))
        dd += float(torch.dot(d, d))
        if d.numel():
            mx = max(mx, float(d.abs().max()))
    na, nb, nd = math.sqrt(aa), math.sqrt(bb), math.sqrt(dd)
    return {
        "norm_a": na,
        "norm_b": nb,
        "norm_diff": nd,
        "rel_change": nd / na if na > 0 else None,
        "cosine": max(-1.0, min(1.0, ab / (na * nb))) if na > 0 and nb > 0 else None,
        "max_abs_diff": mx,
    }


def top_directions(x: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """The top-k singular vectors of a matrix on its smaller dimension, as columns ``[d, k]``."""
    import torch

    from lminspect.weights.stats import SVD_FULL_MAX

    t = _tensor(x)
    if t.shape[0] < t.shape[1]:
        t = t.T  # rows >= cols: the smaller dimension is the columns
    d = t.shape[1]
    k = min(k, d)
    if d <= SVD_FULL_MAX:
        g = (t.T @ t).double()
        _, vecs = torch.linalg.eigh(g)
        return vecs[:, -k:].flip(1).numpy()
    _, _, v = torch.svd_lowrank(t, q=min(d, k + 8), niter=4)
    return v[:, :k].double().numpy()


def direction_overlap(xa: np.ndarray, xb: np.ndarray, k: int = TOP_K,
                      vectors: list[np.ndarray | None] | None = None) -> dict[str, Any]:
    """Principal-angle overlap of the two matrices' top-k singular subspaces, and top-vector |cos|.
    ``vectors``: either side's top directions when already known (None: computed here)."""
    va, vb = (v if v is not None else top_directions(x, k) for x, v in zip((xa, xb), vectors or [None, None], strict=True))
    m = va.T @ vb  # cosines between directions; its singular values are cos(principal angles)
    kk = va.shape[1]
    cos = np.clip(np.linalg.svd(m, compute_uv=False), 0.0, 1.0)
    return {
        "subspace_overlap": float((m * m).sum() / kk),
        "top_cos": float(abs(m[0, 0])),
        "max_principal_angle_deg": float(np.degrees(np.arccos(cos.min()))),
        "k": kk,
    }


def stat_deltas(a: Any, b: Any, name: str, *, svd: bool = True, stats: tuple[dict, dict] | None = None) -> dict[str, Any]:
    """B's minus A's single-model statistics (cached ones reused, or ``stats`` when given), with both values."""
    sa, sb = stats if stats is not None else (a.stats(name, svd=svd), b.stats(name, svd=svd))
    out: dict[str, Any] = {}
    for s in STAT_DELTAS:
        va, vb = sa.get(s), sb.get(s)
        out[f"{s}_a"], out[f"{s}_b"] = va, vb
        out[f"d_{s}"] = vb - va if isinstance(va, int | float) and isinstance(vb, int | float) else None
    return out


def diff_models(a: Any, b: Any, *, names: list[str] | None = None, directions: bool = True,
                progress: Callable[[int, int, str], None] | None = None) -> tuple[list[dict[str, Any]], Matching]:
    """Every matched tensor's numbers (``names``: only these), one pair of tensors at a time."""
    m = match_tensors(a, b)
    pairs = m.pairs if names is None else [p for p in m.pairs if p.name in set(names)]
    from lminspect.cachepack import cache_batch

    rows = []
    with cache_batch():  # a few pack files, not three fsync'd files per tensor
        for i, p in enumerate(pairs):
            if progress is not None:
                progress(i, len(pairs), p.name)
            rows.append(diff_pair(a, b, p, directions=directions))
    return rows, m


def overall(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole-model rel_change and cosine over all compared elements."""
    aa = sum((r.get("norm_a") or 0.0) ** 2 for r in rows)
    bb = sum((r.get("norm_b") or 0.0) ** 2 for r in rows)
    dd = sum((r.get("norm_diff") or 0.0) ** 2 for r in rows)
    ab = (aa + bb - dd) / 2  # <a,b> from ||b-a||^2 = ||a||^2 + ||b||^2 - 2<a,b>
    return {"tensors": len(rows), "rel_change": math.sqrt(dd / aa) if aa > 0 else None,
            "cosine": ab / math.sqrt(aa * bb) if aa > 0 and bb > 0 else None}
