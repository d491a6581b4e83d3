"""plotext figures for tensors (histogram, heatmap, spectrum, per-head norms).

Each function is pure: data in, the text of a plotext figure out (ANSI colours,
turned into Rich text by :class:`lminspect.tui.widgets.plot.PlotView`). plotext
keeps one global figure, so every build happens under ``PLOT_LOCK``. Log scales
raise inside plotext; we plot ``log10`` of the values on a linear axis instead.
Training curves come from ``lminspect.plots`` (shared with the CLI), not here.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import numpy as np

PLOT_LOCK = threading.RLock()


def _begin(width: int, height: int, title: str):
    import plotext as plt

    plt.clf()
    plt.plotsize(max(width, 20), max(height, 6))
    plt.theme("clear")
    plt.title(title)
    return plt


def histogram_figure(
    counts: Sequence[float], edges: Sequence[float], width: int, height: int, title: str = "histogram"
) -> str:
    """Bars at bin centres; counts are shown as log10(1 + count) so tails stay visible."""
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    if counts.size == 0 or edges.size != counts.size + 1:
        return f"{title}: no histogram"
    centres = (edges[:-1] + edges[1:]) / 2
    with PLOT_LOCK:
        plt = _begin(width, height, f"{title} (log10(1+count))")
        plt.bar(centres.tolist(), np.log10(1 + counts).tolist(), color="cyan", width=1.0)
        return plt.build()


def spectrum_figure(singular_values: Sequence[float], width: int, height: int, title: str = "singular values") -> str:
    """Singular values by rank, on a log10 axis (plotext log scales raise)."""
    sv = np.asarray(singular_values, dtype=np.float64)
    sv = sv[np.isfinite(sv)]
    if sv.size == 0:
        return f"{title}: none"
    with PLOT_LOCK:
        plt = _begin(width, height, f"{title} (log10, {sv.size} values)")
        plt.plot(list(range(1, sv.size + 1)), np.log10(np.maximum(sv, 1e-12)).tolist(), color="magenta", marker="braille")
        plt.xlabel("rank")
        return plt.build()


def heads_figure(norms: Sequence[float], width: int, height: int, title: str = "per-head norm") -> str:
    """One bar per attention head (Frobenius norm of the head's slice)."""
    norms = np.asarray(norms, dtype=np.float64)
    if norms.size == 0:
        return f"{title}: none"
    with PLOT_LOCK:
        plt = _begin(width, height, title)
        plt.bar([str(i) for i in range(norms.size)], norms.tolist(), color="green", width=0.6)
        plt.xlabel("head")
        return plt.build()


def downsample(matrix: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Mean of |x| over blocks, so a 49152 x 576 embedding fits a terminal.

    Works on any 1-D/2-D array (more dims are flattened into rows); reads the
    array once, in row chunks, so a memory map never becomes one big temporary.
    """
    a = np.asarray(matrix)
    if a.ndim == 0:
        a = a.reshape(1, 1)
    elif a.ndim == 1:
        a = a.reshape(1, -1)
    elif a.ndim > 2:
        a = a.reshape(-1, a.shape[-1])
    n, m = a.shape
    rows, cols = max(1, min(rows, n)), max(1, min(cols, m))
    r_edges = np.linspace(0, n, rows + 1).astype(np.int64)
    c_edges = np.linspace(0, m, cols + 1).astype(np.int64)
    out = np.empty((rows, cols), dtype=np.float64)
    for i in range(rows):
        block = np.abs(np.asarray(a[r_edges[i] : r_edges[i + 1]], dtype=np.float32))
        colsum = block.sum(axis=0, dtype=np.float64)
        sums = np.add.reduceat(colsum, c_edges[:-1])
        widths = np.diff(c_edges) * (r_edges[i + 1] - r_edges[i])
        out[i] = sums / np.maximum(widths, 1)
    return out


def heatmap_figure(blocks: np.ndarray, shape: Sequence[int], width: int, height: int, title: str = "|W| heatmap") -> str:
    """Grey-scale map of block-mean |W|; axes are labelled in real row/column indices."""
    blocks = np.asarray(blocks, dtype=np.float64)
    if blocks.size == 0:
        return f"{title}: empty"
    plot_rows = max(2, height - 4)
    plot_cols = max(4, width - 8)
    if blocks.shape[0] > plot_rows or blocks.shape[1] > plot_cols:
        blocks = _rebin(blocks, min(plot_rows, blocks.shape[0]), min(plot_cols, blocks.shape[1]))
    hi = float(np.nanmax(blocks)) if np.isfinite(blocks).any() else 1.0
    scaled = np.nan_to_num(blocks / (hi or 1.0) * 255.0).clip(0, 255)
    dims = " x ".join(str(int(s)) for s in shape)
    with PLOT_LOCK:
        plt = _begin(width, height, f"{title} ({dims}; {blocks.shape[0]}x{blocks.shape[1]} blocks, max {hi:.3g})")
        plt.matrix_plot(scaled.tolist())
        return plt.build()


def _rebin(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    r = np.linspace(0, a.shape[0], rows + 1).astype(int)
    c = np.linspace(0, a.shape[1], cols + 1).astype(int)
    out = np.empty((rows, cols))
    for i in range(rows):
        band = a[r[i] : r[i + 1]].mean(axis=0)
        out[i] = np.add.reduceat(band, c[:-1]) / np.diff(c)
    return out


def head_norms(weight: np.ndarray, n_heads: int, *, by_columns: bool) -> list[float]:
    """Frobenius norm of each head's slice of a projection in ``[out, in]`` orientation.

    q/k/v: heads are blocks of output rows; o: heads are blocks of input columns.
    """
    w = np.asarray(weight, dtype=np.float32)
    if w.ndim != 2 or n_heads <= 0:
        return []
    axis_len = w.shape[1] if by_columns else w.shape[0]
    if axis_len % n_heads:
        return []
    hd = axis_len // n_heads
    out = []
    for h in range(n_heads):
        part = w[:, h * hd : (h + 1) * hd] if by_columns else w[h * hd : (h + 1) * hd]
        out.append(float(math.sqrt(float(np.square(part, dtype=np.float64).sum()))))
    return out
