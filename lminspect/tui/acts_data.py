"""The Activations tab's data: a loaded results directory summarized once for drawing.

:func:`summarize` runs in the tab's load worker; the per-site numbers are
``SiteStats.summary(profile=True)`` (the same row ``lminspect activations`` prints) plus the
per-dimension arrays the figures pick from. The rest are pure helpers the tab and its tests use.
No Textual here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TOP_DIMS = 10


# ---------------------------------------------------------------------------- data (worker side)


@dataclass
class SiteView:
    """One site's numbers, computed once from ``SiteStats`` (numpy arrays per dimension)."""

    name: str
    kind: str
    pos: int
    layer: int | None
    dim: int
    n: int
    site_std: float
    outlier_k: float
    outlier_dims: int
    per_dim: dict[str, np.ndarray]  # std, absmax, mean, kurtosis, outliers (counts), fire (mlp_hidden)
    agg: dict[str, float]  # std_med, std_max, absmax_med, absmax_max, kurt_med, kurt_max (from SiteStats.summary)
    dead: int | None = None
    fire_mean: float | None = None


@dataclass
class ActsResult:
    """A loaded results directory, ready to draw."""

    path: str
    index: dict[str, Any]
    plan: str | None
    plan_layers: list[int]
    tokens: int
    batches: int
    complete: bool
    sites: dict[str, SiteView]
    stats: Any = field(repr=False, default=None)  # the ActivationStats, for diffs

    @property
    def kinds(self) -> list[str]:
        return list(dict.fromkeys(s.kind for s in self.sites.values()))

    def of_kind(self, kind: str) -> list[SiteView]:
        return sorted((s for s in self.sites.values() if s.kind == kind), key=lambda s: s.pos)

    @property
    def model(self) -> dict[str, Any]:
        m = self.index.get("model")
        return m if isinstance(m, dict) else {}

    @property
    def plan_is_identity(self) -> bool:
        """Every layer once, in order: plan positions are layers."""
        return self.plan_layers == list(range(len(self.plan_layers)))


def summarize(stats: Any, path: str | None = None) -> ActsResult:
    """Everything the tab draws, from an ``ActivationStats`` (runs in the load worker).

    The per-site numbers are ``SiteStats.summary(profile=True)``, the same row the CLI prints;
    only the per-dimension arrays are added here.
    """
    sites: dict[str, SiteView] = {}
    for s in stats:
        r = s.summary(profile=True)
        per_dim = {"std": np.asarray(s.std), "absmax": np.asarray(s.absmax), "mean": np.asarray(s.mean),
                   "kurtosis": np.asarray(s.kurtosis), "outliers": np.asarray(s.outlier_counts)}
        if s.fire_freq is not None:
            per_dim["fire"] = np.asarray(s.fire_freq)
        agg = {"std_med": r["std_median"], "std_max": r["std_max"], "absmax_med": r["absmax_median"],
               "absmax_max": r["absmax"], "kurt_med": r["kurtosis_median"], "kurt_max": r["kurtosis_max"]}
        sites[s.name] = SiteView(
            name=s.name, kind=s.kind, pos=s.pos, layer=s.layer, dim=int(s.dim), n=int(s.n),
            site_std=float(r["std"]), outlier_k=float(s.outlier_k), outlier_dims=r["outlier_dims"],
            per_dim=per_dim, agg=agg, dead=r.get("dead"), fire_mean=r.get("fire_freq_mean"),
        )
    return ActsResult(path=str(path or stats.dir), index=dict(stats.index), plan=stats.plan,
                      plan_layers=list(stats.plan_layers), tokens=int(stats.tokens), batches=int(stats.batches),
                      complete=bool(stats.complete), sites=sites, stats=stats)


# ---------------------------------------------------------------------------- pure helpers


def layer_profile(sites: Sequence[SiteView]) -> dict[str, np.ndarray]:
    """Per plan position of one kind: median and max over dimensions of std and of |x| max."""
    out: dict[str, np.ndarray] = {
        "positions": np.array([s.pos for s in sites], dtype=np.int64),
        "layers": np.array([-1 if s.layer is None else s.layer for s in sites], dtype=np.int64),
    }
    for key in ("std_med", "std_max", "absmax_med", "absmax_max"):
        out[key] = np.array([s.agg[key] for s in sites], dtype=np.float64)
    return out


def top_dims(values: np.ndarray, k: int = TOP_DIMS) -> list[int]:
    """The ``k`` dimensions with the largest ``|value|`` (non-finite values last), largest first."""
    v = np.abs(np.asarray(values, dtype=np.float64))
    v = np.where(np.isfinite(v), v, -np.inf)
    order = np.argsort(-v, kind="stable")
    return [int(d) for d in order[:k]]


def identity_mark(model: Mapping[str, Any] | None, identity: Mapping[str, Any] | None) -> str:
    """``"this model"`` when a results dir's model identity is the open model's; ``""`` otherwise."""
    if not model or not identity:
        return ""
    fp = model.get("fingerprint")
    if fp and fp == identity.get("fingerprint"):
        return "this model"
    if model.get("path") and model.get("path") == identity.get("path"):
        return "this model's path, other files"
    return ""
