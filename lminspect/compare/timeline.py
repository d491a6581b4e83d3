"""A weight statistic across a run's checkpoints (``lminspect timeline RUN``, ``Runs.timeline``).

Each checkpoint is opened in turn and its statistics come from the single-model statistics
(``weights/stats.py``), cached on disk per checkpoint file: a second timeline, or one over a
run that grew by a few checkpoints, computes only what is new. At most one tensor of one
checkpoint is in memory at a time.

The default view is one value per checkpoint and component (``attn.q``, ``mlp.down``, ...):
the mean over layers, or one layer's value with ``layer=N``; ``tensors=[glob, ...]`` gives one
column per matching tensor instead (e.g. ``embed.tokens.weight``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from lminspect.compare.checkpoints import Checkpoint
from lminspect.errors import UserError

# statistics that need the spectrum (the SVD pass); the others need one streamed read
SPECTRAL = frozenset({"stable_rank", "effective_rank", "alpha", "alpha_xmin", "alpha_ks", "spectral_norm"})
MOMENTS = frozenset({"mean", "std", "rms", "min", "max", "absmax", "kurtosis", "frac_near_zero"})


def select_checkpoints(cks: Sequence[Checkpoint], every: int = 1) -> list[Checkpoint]:
    """Every ``every``-th checkpoint, oldest first, always ending with the newest."""
    if every < 1:
        raise UserError(f"--every {every}: give a whole number >= 1")
    picked = list(cks[::every])
    if picked[-1] != cks[-1]:
        picked.append(cks[-1])
    return picked


def _wanted(names: Sequence[str], tensors: Sequence[str] | None) -> list[str]:
    if not tensors:  # layer weight matrices and norms: what the component view shows
        return [n for n in names if n.startswith("layers.") and n.endswith(".weight")]
    from lminspect.weights.naming import glob_matches

    return [n for n in names if glob_matches(tensors, n)]


def stat_records(cks: Sequence[Checkpoint], stat: str, *, tensors: Sequence[str] | None = None,
                 progress: Callable[[int, int, str], None] | None = None) -> list[dict[str, Any]]:
    """``{"step", "tokens", "tensor", "value"}`` for every checkpoint and selected tensor."""
    from lminspect.weights import open_store
    from lminspect.weights.stats import stat_key

    stat = stat_key(stat)
    if stat not in SPECTRAL | MOMENTS:
        raise UserError(f"--stat {stat!r}: choose one of {', '.join(sorted(SPECTRAL | MOMENTS))}")
    out: list[dict[str, Any]] = []
    for k, ck in enumerate(cks):
        store = open_store(ck.path)
        names = _wanted(store.canonical_names(), tensors)
        if not names:
            what = ", ".join(tensors) if tensors else "layers.N.*.weight"
            raise UserError(f"{ck.path}: no tensor matches {what}")
        if progress is not None:
            progress(k, len(cks), f"step {ck.step}")
        for n in names:
            v = store.stats(n, svd=stat in SPECTRAL).get(stat)
            out.append({"step": ck.step, "tokens": ck.tokens, "tensor": n,
                        "value": float(v) if isinstance(v, int | float) else None})
    return out


def timeline_columns(records: Sequence[dict[str, Any]], *, layer: int | None = None,
                     per_tensor: bool = False) -> tuple[list[int], list[int | None], dict[str, list[float | None]]]:
    """``(steps, tokens, {column: value per checkpoint})``: one column per component (mean over
    layers, or ``layer``'s value), or per tensor with ``per_tensor``."""
    from lminspect.weights.stats import by_layer

    steps = sorted({r["step"] for r in records})
    tokens = {r["step"]: r["tokens"] for r in records}
    cols: dict[str, list[float | None]] = {}
    for k, s in enumerate(steps):
        rows = [r for r in records if r["step"] == s]
        if per_tensor:
            vals = {r["tensor"]: r["value"] for r in rows}
        else:
            results = [{"canonical": r["tensor"], "v": r["value"]} for r in rows if r["value"] is not None]
            if not results:
                continue
            layers, comps = by_layer(results, "v")
            if layer is not None and layer not in layers:
                raise UserError(f"--layer {layer}: the checkpoints have layers {layers[0]}-{layers[-1]}")
            vals = {c: _pick(layers, v, layer) for c, v in comps.items()}
        for c, v in vals.items():
            cols.setdefault(c, [None] * len(steps))[k] = v
    return steps, [tokens[s] for s in steps], cols


def _pick(layers: list[int], values: list[float | None], layer: int | None) -> float | None:
    if layer is not None:
        return values[layers.index(layer)]
    have = [v for v in values if v is not None and math.isfinite(v)]
    return sum(have) / len(have) if have else None


def timeline_figure(xs: Sequence[float], cols: dict[str, list[float | None]], stat: str, *, xlabel: str = "step",
                    title: str | None = None, width: int = 100, height: int = 22, color: bool = False) -> str:
    """The columns as lines against steps (or tokens): the shared plotext line figure."""
    from lminspect.plots import lines_figure

    series = {c: (list(xs), v) for c, v in cols.items()}
    return lines_figure(series, title=title or f"{stat} across checkpoints", xlabel=xlabel, width=width,
                        height=height, color=color)
