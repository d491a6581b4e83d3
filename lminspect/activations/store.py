"""The results directory of ``lminspect activations``: write (atomically, resumably) and load.

Layout of ``DIR``::

    index.json     model identity, plan, sites, config, progress (for people and tools)
    stats.npz      every site's raw accumulator state ("{site}/{field}") + "progress" (JSON);
                   rewritten atomically (temp file + rename) at each checkpoint, so it is
                   always a consistent snapshot and the source of truth for resuming
    arrays/        derived float arrays per kind, stacked over plan positions, written when the
                   run completes: {kind}.{mean,var,kurtosis,absmax,...}.npy  [P, D]
    tokens/        only with --keep-tokens: {site}.npy [tokens, D] (float16/32), ids.npy [tokens],
                   pos.npy [tokens, 2] (doc index, token offset); .npy headers, so np.load(mmap_mode="r")

``load(DIR)`` reads ``stats.npz`` (so a partial run is loadable too) and derives variance,
skew, kurtosis, outliers, firing frequency on access.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lminspect.activations.accumulate import SiteAccumulator
from lminspect.errors import FormatError, UserError
from lminspect.fsutil import atomic_dir, atomic_path, atomic_write_text

FORMAT = "lminspect-activations"
VERSION = 1
DERIVED = ("mean", "var", "std", "skew", "kurtosis", "min", "max", "absmax", "outlier_counts")


# ---------------------------------------------------------------------------- identity


def model_identity(store: Any) -> dict[str, Any]:
    """Who produced the statistics: the store's path, format, arch, and each weight file's
    resolved path, size and mtime. ``fingerprint`` hashes them, so a re-downloaded or edited
    checkpoint under the same name is *another* model (its statistics must not be mixed)."""
    files: list[dict[str, Any]] = []
    seen: set[Path] = set()
    for k in store.keys():
        try:
            f = Path(store.file_of(k)).resolve()
        except Exception:  # noqa: BLE001 - a store without per-tensor files: identity by path only
            continue
        if f in seen:
            continue
        seen.add(f)
        st = f.stat()
        files.append({"path": str(f), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    files.sort(key=lambda d: d["path"])
    path = str(Path(store.path).resolve())
    key = json.dumps({"path": path, "files": files}, sort_keys=True)
    return {"name": getattr(store, "name", None), "path": path, "format": getattr(store, "format", None),
            "arch": getattr(store, "arch", None), "files": files,
            "fingerprint": hashlib.sha1(key.encode()).hexdigest()[:16]}


# ---------------------------------------------------------------------------- index / state IO


def read_index(out: Path) -> dict[str, Any] | None:
    f = Path(out) / "index.json"
    if not f.is_file():
        return None
    try:
        idx = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise FormatError(f"{f}: cannot read JSON: {e} (hint: --overwrite starts over)") from None
    if not isinstance(idx, dict) or idx.get("format") != FORMAT:
        raise FormatError(f"{f}: not an lminspect activations index (hint: --overwrite starts over)")
    return idx


def write_state(out: Path, accs: dict[str, SiteAccumulator], progress: dict[str, Any]) -> None:
    """One atomic snapshot of every accumulator plus the stream position that produced it."""
    arrays: dict[str, np.ndarray] = {"progress": np.array(json.dumps(progress))}
    for site, acc in accs.items():
        for field, arr in acc.state().items():
            arrays[f"{site}/{field}"] = arr
    with atomic_path(Path(out) / "stats.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def read_state(out: Path) -> tuple[dict[str, SiteAccumulator], dict[str, Any]]:
    f = Path(out) / "stats.npz"
    try:
        with np.load(f, allow_pickle=False) as z:
            progress = json.loads(str(z["progress"]))
            grouped: dict[str, dict[str, np.ndarray]] = {}
            for key in z.files:
                if "/" in key:
                    site, _, field = key.partition("/")
                    grouped.setdefault(site, {})[field] = z[key]
        accs = {s: SiteAccumulator.from_state(st) for s, st in grouped.items()}
        if not isinstance(progress, dict):
            raise ValueError("no progress record")
    except FileNotFoundError:
        raise FormatError(f"{out}: no stats.npz (not an activations results dir, or never got past batch 1)") from None
    except Exception as e:  # noqa: BLE001 - zipfile, numpy and json each raise their own types on a corrupt file
        raise FormatError(f"{f}: corrupt or unreadable ({type(e).__name__}: {e}) (hint: --overwrite starts "
                          "over)") from None
    return accs, progress


def write_index(out: Path, index: dict[str, Any]) -> None:
    atomic_write_text(Path(out) / "index.json", json.dumps(index, indent=1) + "\n")


def write_arrays(out: Path, stats: ActivationStats) -> None:
    """Derived per-kind arrays for tools that just want ``np.load`` (``arrays/{kind}.{stat}.npy``)."""
    with atomic_dir(Path(out) / "arrays") as tmp:
        for kind in stats.kinds:
            ks = stats.kind(kind)
            names = list(DERIVED) + (["fire_freq"] if kind == "mlp_hidden" else [])
            for name in names:
                np.save(tmp / f"{kind}.{name}.npy", getattr(ks, name))
            np.save(tmp / f"{kind}.hist.npy", ks.hist)
            np.save(tmp / f"{kind}.hist_range.npy", np.array([s.hist_range for s in ks.sites]))


# ---------------------------------------------------------------------------- token memmaps


class TokenWriter:
    """``tokens/{site}.npy`` preallocated ``[tokens, D]``; each batch is written through a fresh,
    immediately released ``np.memmap`` window so pages never pile up in RSS."""

    def __init__(self, root: Path, total: int, dtype: str) -> None:
        self.root = root
        self.total = total
        self.dtype = np.dtype(dtype)
        self._offsets: dict[str, tuple[int, np.dtype, int]] = {}

    def _file(self, name: str, dim: int | None, dtype: np.dtype) -> tuple[int, np.dtype, int]:
        got = self._offsets.get(name)
        if got is not None:
            return got
        f = self.root / f"{name}.npy"
        shape = (self.total,) if dim is None else (self.total, dim)
        if not f.is_file():
            self.root.mkdir(parents=True, exist_ok=True)
            try:
                mm = np.lib.format.open_memmap(f, mode="w+", dtype=dtype, shape=shape)
            except OSError as e:
                from lminspect.fsutil import disk_full_error, is_disk_full

                if is_disk_full(e):
                    f.unlink(missing_ok=True)
                    raise disk_full_error(f, need=int(np.prod(shape)) * np.dtype(dtype).itemsize) from None
                raise
            del mm
        mm = np.load(f, mmap_mode="r")
        fshape, fdtype, header = mm.shape, mm.dtype, int(mm.offset)
        del mm
        if tuple(fshape) != shape or fdtype != dtype:
            raise UserError(f"{f}: holds {fdtype}{tuple(fshape)}, expected {dtype}{shape} (hint: --overwrite)")
        got = (header, dtype, 1 if dim is None else dim)
        self._offsets[name] = got
        return got

    def write(self, name: str, row0: int, arr: np.ndarray, dim: int | None = None, dtype: Any = None) -> None:
        dt = np.dtype(dtype) if dtype is not None else self.dtype
        header, dt, width = self._file(name, dim, dt)
        n = arr.shape[0]
        if n == 0:
            return
        shape = (n,) if dim is None else (n, width)
        mm = np.memmap(self.root / f"{name}.npy", dtype=dt, mode="r+", offset=header + row0 * width * dt.itemsize,
                       shape=shape)
        mm[:] = arr
        mm.flush()
        del mm


# ---------------------------------------------------------------------------- loaded views


def _finite(a: np.ndarray) -> np.ndarray:
    """The finite values of ``a`` as float64 (a dimension that never varied has nan statistics)."""
    a = np.asarray(a, dtype=np.float64)
    return a[np.isfinite(a)]


def _split_site(site: str) -> tuple[str, int]:
    kind, _, pos = site.partition(".")
    return kind, int(pos)


class SiteStats:
    """Statistics of one site (``"{kind}.{pos}"``), all numpy, derived from the raw state."""

    def __init__(self, name: str, acc: SiteAccumulator, layer: int | None = None) -> None:
        self.name = name
        self.kind, self.pos = _split_site(name)
        self.layer = layer
        self._acc = acc

    n = property(lambda self: self._acc.n, doc="tokens seen")
    dim = property(lambda self: self._acc.dim)
    mean = property(lambda self: self._acc.mean)
    min = property(lambda self: self._acc.min)
    max = property(lambda self: self._acc.max)
    hist = property(lambda self: self._acc.hist, doc="pooled histogram counts [BINS] over `edges`")
    hist_range = property(lambda self: self._acc.hist_range)
    hist_stride = property(lambda self: self._acc.hist_stride, doc="the histogram counts every k-th token")
    under = property(lambda self: self._acc.under, doc="values below edges[0]")
    over = property(lambda self: self._acc.over, doc="values above edges[-1]")
    outlier_counts = property(lambda self: self._acc.outliers,
                              doc="per dimension: tokens with |x| > outlier_k * site_std")
    outlier_k = property(lambda self: self._acc.outlier_k)

    @property
    def edges(self) -> np.ndarray:
        r = self._acc.hist_range
        return np.linspace(-r, r, self._acc.bins + 1)

    @property
    def var(self) -> np.ndarray:
        return self._acc.m2 / max(self.n, 1)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var)

    @property
    def site_std(self) -> float:
        return self._acc.site_std()

    @property
    def skew(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.sqrt(self.n) * self._acc.m3 / self._acc.m2**1.5

    @property
    def kurtosis(self) -> np.ndarray:
        """Pearson kurtosis ``n M4 / M2^2`` per dimension (3 for a Gaussian; nan for constant dims)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.n * self._acc.m4 / (self._acc.m2 * self._acc.m2)

    @property
    def excess_kurtosis(self) -> np.ndarray:
        return self.kurtosis - 3.0

    @property
    def absmax(self) -> np.ndarray:
        return np.maximum(np.abs(self.min), np.abs(self.max))

    @property
    def outlier_dims(self) -> np.ndarray:
        """Dimensions with at least one outlier, most frequent first."""
        c = self._acc.outliers
        dims = np.nonzero(c)[0]
        return dims[np.argsort(-c[dims], kind="stable")]

    def examples(self, dim: int) -> list[tuple[int, int, float]]:
        """The largest |x| seen in ``dim``: ``(doc index, token offset, |x|)``, largest first."""
        out = []
        for (doc, off), v in zip(self._acc.top_pos[dim], self._acc.top_val[dim], strict=True):
            if doc >= 0:
                out.append((int(doc), int(off), float(v)))
        return out

    @property
    def fire_freq(self) -> np.ndarray | None:
        """mlp_hidden only: fraction of tokens with activation > 0, per neuron."""
        if self._acc.fired is None:
            return None
        return self._acc.fired / max(self.n, 1)

    @property
    def dead(self) -> np.ndarray | None:
        """mlp_hidden only: neurons never > 0 on any token."""
        if self._acc.fired is None:
            return None
        return np.nonzero(self._acc.fired == 0)[0]

    def summary(self, *, profile: bool = False) -> dict[str, Any]:
        """The site in one row (the CLI table, ``li.activations``, the TUI's site list).

        ``profile=True`` adds the median and max over dimensions of the per-dimension std and
        |x| max (``std_median``, ``std_max``, ``absmax_median``): the "massive activations" view
        per layer. The TUI draws those; the default row stays as the CLI prints it.
        """
        k = self.kurtosis
        row = {"site": self.name, "layer": self.layer, "dim": self.dim, "n": self.n,
               "mean_norm": float(np.linalg.norm(self.mean)), "std": self.site_std,
               "absmax": float(self.absmax.max()) if self.n else 0.0,
               "kurtosis_median": float(np.nanmedian(k)) if self.n else float("nan"),
               "kurtosis_max": float(np.nanmax(k)) if self.n and np.isfinite(k).any() else float("nan"),
               "outlier_dims": int(len(self.outlier_dims))}
        if self._acc.fired is not None:
            row["dead"] = int(len(self.dead))
            row["fire_freq_mean"] = float(self.fire_freq.mean()) if self.n else 0.0
        if profile:
            std, absmax = _finite(self.std), _finite(self.absmax)
            nan = float("nan")
            row.update(std_median=float(np.median(std)) if std.size else nan,
                       std_max=float(std.max()) if std.size else nan,
                       absmax_median=float(np.median(absmax)) if absmax.size else nan)
        return row

    def __repr__(self) -> str:
        s = self.summary()
        top = ", ".join(f"{d}({int(self._acc.outliers[d])})" for d in self.outlier_dims[:5])
        extra = f" dead={s['dead']} fire={s['fire_freq_mean']:.3f}" if "dead" in s else ""
        return (f"<SiteStats {self.name} layer={self.layer} dim={self.dim} n={self.n} std={s['std']:.4g} "
                f"absmax={s['absmax']:.4g} kurt(med/max)={s['kurtosis_median']:.3g}/{s['kurtosis_max']:.3g} "
                f"outlier_dims={s['outlier_dims']}{' [' + top + ']' if top else ''}{extra}>")


class KindStats:
    """One kind over its plan positions: attribute access stacks a SiteStats field to ``[P, ...]``."""

    def __init__(self, kind: str, sites: list[SiteStats]) -> None:
        self.kind = kind
        self.sites = sites
        self.positions = [s.pos for s in sites]

    def __getattr__(self, name: str) -> np.ndarray:
        if name.startswith("_") or name in ("kind", "sites", "positions"):
            raise AttributeError(name)
        vals = [getattr(s, name) for s in self.sites]
        if any(v is None for v in vals):
            raise AttributeError(f"{self.kind} has no {name!r}")
        return np.stack([np.asarray(v) for v in vals])

    def __repr__(self) -> str:
        return f"<KindStats {self.kind} positions={self.positions}>"


class ActivationStats:
    """A loaded results directory. ``stats["resid_out.3"]`` -> SiteStats; ``stats.kind("mlp_hidden")``
    -> KindStats (arrays stacked over positions); ``stats.tokens_array(site)`` -> the kept tokens."""

    def __init__(self, out: Path, index: dict[str, Any], accs: dict[str, SiteAccumulator],
                 progress: dict[str, Any]) -> None:
        self.dir = Path(out)
        self.index = index
        self.progress = progress
        layers = index.get("plan_layers") or []
        order = {s: i for i, s in enumerate(index.get("sites") or [])}
        names = sorted(accs, key=lambda s: (order.get(s, len(order)), s))
        self._sites: dict[str, SiteStats] = {}
        for s in names:
            pos = _split_site(s)[1]
            self._sites[s] = SiteStats(s, accs[s], layers[pos] if pos < len(layers) else None)

    # identity / progress
    model = property(lambda self: self.index.get("model", {}).get("name"))
    plan = property(lambda self: self.index.get("plan"))
    plan_layers = property(lambda self: list(self.index.get("plan_layers") or []))
    tokens = property(lambda self: int(self.progress.get("tokens_done", 0)))
    batches = property(lambda self: int(self.progress.get("batches", 0)))
    complete = property(lambda self: bool(self.progress.get("complete", False)))

    @property
    def sites(self) -> list[str]:
        return list(self._sites)

    @property
    def kinds(self) -> list[str]:
        return list(dict.fromkeys(s.kind for s in self._sites.values()))

    def __getitem__(self, site: str) -> SiteStats:
        try:
            return self._sites[site]
        except KeyError:
            raise UserError(f"{self.dir}: no site {site!r} (have {', '.join(self._sites) or 'none'})") from None

    def __contains__(self, site: object) -> bool:
        return site in self._sites

    def __iter__(self) -> Iterator[SiteStats]:
        return iter(self._sites.values())

    def __len__(self) -> int:
        return len(self._sites)

    def kind(self, kind: str) -> KindStats:
        sites = [s for s in self._sites.values() if s.kind == kind]
        if not sites:
            raise UserError(f"{self.dir}: no statistics for {kind!r} (have {', '.join(self.kinds)})")
        return KindStats(kind, sites)

    def summary(self) -> list[dict[str, Any]]:
        return [s.summary() for s in self._sites.values()]

    def tokens_array(self, site: str) -> np.ndarray:
        """Kept token-level activations ``[tokens, D]`` of ``site`` (memory-mapped, read-only)."""
        f = self.dir / "tokens" / f"{site}.npy"
        if not f.is_file():
            raise UserError(f"{self.dir}: no token-level data for {site!r} (collect with --keep-tokens)")
        return np.load(f, mmap_mode="r")[: self.tokens]

    def token_ids(self) -> np.ndarray:
        f = self.dir / "tokens" / "ids.npy"
        if not f.is_file():
            raise UserError(f"{self.dir}: no token ids (collect with --keep-tokens)")
        return np.load(f, mmap_mode="r")[: self.tokens]

    def __repr__(self) -> str:
        state = "complete" if self.complete else "partial"
        head = (f"<ActivationStats {self.dir} model={self.model} plan={self.plan!r} tokens={self.tokens} "
                f"({state}) sites={len(self)}>")
        lines = [head]
        for s in list(self._sites.values())[:12]:
            lines.append("  " + repr(s))
        if len(self) > 12:
            lines.append(f"  ... {len(self) - 12} more (stats.sites, stats.kind(KIND))")
        return "\n".join(lines)


def load(out: str | os.PathLike[str]) -> ActivationStats:
    """Open a results directory written by ``lminspect activations`` (complete or partial)."""
    out = Path(out)
    if not out.is_dir():
        raise UserError(f"{out}: no such activations results directory")
    index = read_index(out)
    if index is None:
        raise UserError(f"{out}: no index.json (not an activations results dir)")
    accs, progress = read_state(out)
    return ActivationStats(out, index, accs, progress)
