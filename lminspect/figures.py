"""Figures to keep: the terminal figures saved as PNG or SVG with matplotlib.

matplotlib is an optional extra (``pip install 'lminspect[figures]'``); the terminal
figures in :mod:`lminspect.plots` never need it. Every saver here takes the same data,
title and axis labels that the terminal figure shows, so a saved figure and a printed
one tell the same story. Use :func:`check_figure_path` before a long computation (a bad
suffix or a missing matplotlib fails at once), then one of the ``save_*`` functions.

Files are written to a temp file and renamed; an existing file is refused unless
``overwrite`` is set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lminspect.errors import UserError

FORMATS = (".png", ".svg")
# the same characters the plain-text plots use, as matplotlib markers, so lines match
_MARKERS = "o^s*Dv<>pX"


def check_figure_path(path: str | Path, overwrite: bool = False, inputs: tuple[Any, ...] = ()) -> Path:
    """``path`` as a Path after checking its suffix, that it may be written, and that
    matplotlib is importable; a one-line UserError otherwise."""
    from lminspect.fsutil import check_output

    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise UserError(f"--save {p}: the figure must end in .png or .svg")
    check_output(p, kind="file", overwrite=overwrite, option="--save", inputs=inputs)
    _pyplot()
    return p


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)  # files only: never open a window
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("saving figures needs matplotlib: pip install 'lminspect[figures]'") from None
    return plt


def _write(fig: Any, path: Path, overwrite: bool) -> Path:
    from lminspect.fsutil import atomic_path

    plt = _pyplot()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lower().lstrip("."), dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _clean(xs: Sequence[float], ys: Sequence[float | None]) -> tuple[list[float], list[float]]:
    pts = [(float(a), float(b)) for a, b in zip(xs, ys, strict=True)
           if b is not None and not math.isnan(float(b))]
    return [a for a, _ in pts], [b for _, b in pts]


def _draw_lines(ax: Any, series: dict[str, tuple[Sequence[float], Sequence[float | None]]], title: str,
                xlabel: str, ylabel: str, xlog: bool = False) -> None:
    for k, (label, (xs, ys)) in enumerate(series.items()):
        x, y = _clean(xs, ys)
        if x:
            every = max(1, len(x) // 20)  # a marker every few points keeps dense curves readable
            ax.plot(x, y, label=str(label), marker=_MARKERS[k % len(_MARKERS)], markevery=every, markersize=4,
                    linewidth=1.2)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if xlog:
        ax.set_xscale("log")
    ax.grid(True, alpha=0.3)


def save_lines(path: str | Path, series: dict[str, tuple[Sequence[float], Sequence[float | None]]], *,
               title: str = "", xlabel: str = "", ylabel: str = "", overwrite: bool = False,
               ylog: bool = False) -> Path:
    """One line per ``{label: (xs, ys)}`` (None/NaN points left out), the legend outside the
    axes when there are many lines."""
    p = check_figure_path(path, overwrite)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    _draw_lines(ax, series, title, xlabel, ylabel)
    if ylog:
        ax.set_yscale("log")
    _legend(ax, len(series))
    return _write(fig, p, overwrite)


def save_panels(path: str | Path, panels: Sequence[tuple[str, dict[str, tuple[Sequence[float], Sequence[float]]]]],
                *, xlabel: str = "", overwrite: bool = False) -> Path:
    """Several line plots side by side (``[(title, series), ...]``), sharing one legend."""
    p = check_figure_path(path, overwrite)
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels, strict=True):
        _draw_lines(ax, series, title, xlabel, "")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    return _write(fig, p, overwrite)


def save_heatmap(path: str | Path, mat: Any, *, title: str = "", xlabels: Sequence[str] | None = None,
                 ylabels: Sequence[str] | None = None, xlabel: str = "", ylabel: str = "",
                 overwrite: bool = False) -> Path:
    """A matrix as an image with a colour bar (the scale) and token-labelled axes."""
    import numpy as np

    p = check_figure_path(path, overwrite)
    plt = _pyplot()
    m = np.asarray(mat, dtype=np.float64)
    side = min(12.0, 3 + 0.3 * max(m.shape))
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    im = ax.imshow(m, cmap="viridis", aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax)
    if xlabels is not None and len(xlabels) <= 64:
        ax.set_xticks(range(len(xlabels)), [repr(s)[1:-1] for s in xlabels], rotation=90, fontsize=7)
    if ylabels is not None and len(ylabels) <= 64:
        ax.set_yticks(range(len(ylabels)), [repr(s)[1:-1] for s in ylabels], fontsize=7)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _write(fig, p, overwrite)


def save_histograms(path: str | Path, hists: dict[str, tuple[Sequence[float], Sequence[float]]], *,
                    title: str = "", xlabel: str = "", overwrite: bool = False) -> Path:
    """Histograms ``{label: (bin_edges, counts)}`` drawn as outlined steps on one axis."""
    p = check_figure_path(path, overwrite)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for label, (edges, counts) in hists.items():
        ax.stairs(list(counts), list(edges), label=str(label), linewidth=1.2)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction")
    ax.grid(True, alpha=0.3)
    _legend(ax, len(hists))
    return _write(fig, p, overwrite)


def _legend(ax: Any, n: int) -> None:
    if n < 2:
        return
    if n > 4:  # many lines: beside the axes, never over the data
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    else:
        ax.legend(fontsize=8)


def save_paths(path: str | Path, cloud: tuple[Sequence[float], Sequence[float]],
               paths: dict[str, tuple[Sequence[float], Sequence[float]]], *, title: str = "", xlabel: str = "",
               ylabel: str = "", overwrite: bool = False) -> Path:
    """A point cloud (grey dots) and labelled paths through it, each ending in a dot with its
    label (``lminspect timeline --embeddings``: tokens drifting across checkpoints)."""
    p = check_figure_path(path, overwrite)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 6.4))
    ax.scatter(list(cloud[0]), list(cloud[1]), s=3, color="0.7", linewidths=0)
    for label, (xs, ys) in paths.items():
        line = ax.plot(list(xs), list(ys), linewidth=1.2, marker=".", markersize=4)[0]
        ax.plot([xs[-1]], [ys[-1]], "o", color=line.get_color(), markersize=6)
        ax.annotate(str(label), (xs[-1], ys[-1]), textcoords="offset points", xytext=(4, 4), fontsize=9)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return _write(fig, p, overwrite)


def save_heatmap_grid(path: str | Path, mats: Any, *, row_labels: Sequence[str], col_labels: Sequence[str],
                      title: str = "", overwrite: bool = False) -> Path:
    """Small multiples: ``mats[row][col]`` matrices on one colour scale (0..1 attention
    probabilities, say), a row per ``row_labels`` entry and a column per ``col_labels``."""
    import numpy as np

    p = check_figure_path(path, overwrite)
    plt = _pyplot()
    m = np.asarray(mats, dtype=np.float64)
    rows, cols = m.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols + 1, 1.6 * rows + 0.8), squeeze=False)
    vmax = float(np.nanmax(m)) if m.size else 1.0
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            im = ax.imshow(m[r, c], cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col_labels[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=8)
    fig.suptitle(title)
    fig.colorbar(im, ax=axes, shrink=0.6)
    return _write(fig, p, overwrite)
