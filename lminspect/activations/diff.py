"""Compare two activation results directories site by site (e.g. a stitched plan vs the baseline).

Sites are matched by name (``"{kind}.{pos}"``, plan *position*); each row also names the layer
each side ran at that position, since a stitched plan's position 12 may be layer 8 repeated.
Per site:

- ``mean_shift``: ``||mean_a - mean_b||_2``, and ``rel_shift`` = that over ``||mean_b||_2``;
- ``var_ratio``: total variance ``sum(var_a) / sum(var_b)`` (1 = same spread);
- ``kurt_a`` / ``kurt_b``: median per-dimension Pearson kurtosis, ``kurt_change`` = a - b;
  ``kurt_max_change``: change of the largest per-dimension kurtosis (outlier dims show up here).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lminspect.activations.store import ActivationStats, load
from lminspect.errors import UserError


def _stats(x: ActivationStats | Any) -> ActivationStats:
    return x if isinstance(x, ActivationStats) else load(x)


def _nanmedian(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else float("nan")


def _nanmax(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(np.max(a)) if a.size else float("nan")


def diff(a: ActivationStats | Any, b: ActivationStats | Any) -> list[dict[str, Any]]:
    """One row per site present in both (same dimension); see the module docstring."""
    a, b = _stats(a), _stats(b)
    common = [s for s in a.sites if s in b]
    if not common:
        raise UserError(f"{a.dir} and {b.dir} have no site in common (a: {', '.join(a.sites[:6])}...; "
                        f"b: {', '.join(b.sites[:6])}...)")
    rows = []
    for name in common:
        sa, sb = a[name], b[name]
        if sa.dim != sb.dim:
            continue
        shift = float(np.linalg.norm(sa.mean - sb.mean))
        nb = float(np.linalg.norm(sb.mean))
        va, vb = float(sa.var.sum()), float(sb.var.sum())
        ka, kb = sa.kurtosis, sb.kurtosis
        rows.append({
            "site": name, "kind": sa.kind, "pos": sa.pos, "layer_a": sa.layer, "layer_b": sb.layer,
            "mean_shift": shift, "rel_shift": shift / nb if nb > 0 else float("inf"),
            "var_ratio": va / vb if vb > 0 else float("inf"),
            "kurt_a": _nanmedian(ka), "kurt_b": _nanmedian(kb),
            "kurt_change": _nanmedian(ka) - _nanmedian(kb),
            "kurt_max_change": _nanmax(ka) - _nanmax(kb),
        })
    return rows


def diff_warnings(a: ActivationStats | Any, b: ActivationStats | Any) -> list[str]:
    """What differs between the two collections beyond the plan: token counts, data, sequence
    length... Each is one line; a diff of such results can mislead and should say so."""
    a, b = _stats(a), _stats(b)
    out = []
    if a.tokens != b.tokens:
        out.append(f"different token counts: A {a.tokens:,} vs B {b.tokens:,}")
    sa, sb = a.index.get("settings") or {}, b.index.get("settings") or {}
    for key, what in (("data", "data"), ("split", "data split"), ("text_field", "text field"),
                      ("seq_len", "sequence length"), ("outlier_k", "outlier threshold"), ("dtype", "dtype")):
        if key in sa and key in sb and sa[key] != sb[key]:
            out.append(f"different {what}: A {sa[key]!r} vs B {sb[key]!r}")
    ma, mb = (a.index.get("model") or {}).get("name"), (b.index.get("model") or {}).get("name")
    if ma and mb and ma != mb:
        out.append(f"different models: A {ma} vs B {mb}")
    if not a.complete or not b.complete:
        partial = " and ".join(n for n, s in (("A", a), ("B", b)) if not s.complete)
        out.append(f"{partial} unfinished (rerun the collection to complete it)")
    return out


def matched_by_position(a: ActivationStats | Any, b: ActivationStats | Any) -> bool:
    """True when the two plans differ, so a row pairs plan positions, not the same layers."""
    a, b = _stats(a), _stats(b)
    return a.plan_layers != b.plan_layers


def diff_table(rows: list[dict[str, Any]], title: str = "", by_position: bool = False) -> Any:
    """A rich Table of ``diff`` rows; ``by_position`` says in the header that rows pair plan
    positions of two different plans (position 24 may be layer 24 in A and layer 27 in B)."""
    from rich.table import Table

    t = Table(title=title or None)
    site = "site (matched by plan position)" if by_position else "site"
    for col, just in ((site, "left"), ("layer a/b", "right"), ("|Δmean|", "right"), ("rel", "right"),
                      ("var a/b", "right"), ("kurt a", "right"), ("kurt b", "right"), ("Δkurt", "right"),
                      ("Δkurt max", "right")):
        t.add_column(col, justify=just)
    for r in rows:
        t.add_row(r["site"], f"{r['layer_a']}/{r['layer_b']}", f"{r['mean_shift']:.4g}", f"{r['rel_shift']:.3g}",
                  f"{r['var_ratio']:.3g}", f"{r['kurt_a']:.3g}", f"{r['kurt_b']:.3g}", f"{r['kurt_change']:+.3g}",
                  f"{r['kurt_max_change']:+.3g}")
    return t
