"""plotext figures for tensors (histogram, heatmap, spectrum, per-head norms) and activation
statistics (per-layer lines, per-dimension values).

Each function is pure: data in, the text of a plotext figure out (ANSI colours,
turned into Rich text by :class:`lminspect.tui.widgets.plot.PlotView`). plotext
keeps one global figure, so every build happens under ``PLOT_LOCK``. Log scales
raise inside plotext; we plot ``log10`` of the values on a linear axis instead.
Training curves come from ``lminspect.plots`` (shared with the CLI), not here; so does
the drawing of :func:`by_layer_figure` (``plots.by_layer_figure``, under ``PLOT_LOCK``).
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
        ticks = np.linspace(edges[0], edges[-1], 5).tolist()
        plt.xticks(ticks, [f"{t:.3g}" for t in ticks])
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


# viridis at 5 stops: dark blue (small |W|) -> yellow (large |W|); readable on dark and light themes
_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float64)


def _colours(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB rows of the viridis ramp."""
    x = np.clip(np.nan_to_num(values), 0.0, 1.0) * (len(_VIRIDIS) - 1)
    lo = np.floor(x).astype(int).clip(0, len(_VIRIDIS) - 2)
    t = (x - lo)[..., None]
    return (_VIRIDIS[lo] * (1 - t) + _VIRIDIS[lo + 1] * t).round().astype(int)


# without colour: |W| as shades, light to dark (a cell per matrix row and column)
SHADES = " ░▒▓█"


def heatmap_figure(blocks: np.ndarray, shape: Sequence[int], width: int, height: int, title: str = "|W| heatmap",
                   *, mono: bool = False) -> str:
    """Block-mean |W| as coloured half-blocks (two matrix rows per text line), axes in real indices;
    ``mono`` (a terminal without colour): shade characters instead, one matrix row per line.

    Drawn directly rather than with plotext's matrix_plot, whose column mapping leaves gaps
    and labels axes in block numbers; same ANSI-text interface as the plotext figures.
    """
    blocks = np.asarray(blocks, dtype=np.float64)
    if blocks.size == 0:
        return f"{title}: empty"
    shape = tuple(int(s) for s in shape) or (1,)
    n_rows = shape[0] if len(shape) >= 2 else 1
    n_cols = shape[-1]
    label_w = len(str(n_rows)) + 1
    text_rows = max(2, height - 3)
    rows = min(blocks.shape[0], text_rows if mono else 2 * text_rows)
    cols = min(blocks.shape[1], max(4, width - label_w - 2))
    if (rows, cols) != blocks.shape:
        blocks = _rebin(blocks, rows, cols)
    finite = blocks[np.isfinite(blocks)]
    hi = float(finite.max()) if finite.size else 1.0
    if mono:
        return _shaded(blocks / (hi or 1.0), shape, title, hi, n_rows, n_cols, label_w)
    rgb = _colours(blocks / (hi or 1.0))
    if rows % 2:  # pad to an even number of rows: the last line shows a top half only
        rgb = np.concatenate([rgb, np.full((1, cols, 3), -1)], axis=0)
    dims = " x ".join(str(s) for s in shape)
    lines = [f"{title}  {dims}, {rows}x{cols} blocks of mean |W|, max {hi:.3g} (yellow)"]
    for r in range(0, rgb.shape[0], 2):
        start = int(round(r * n_rows / rows)) if rows else 0
        label = str(start).rjust(label_w - 1) if r % 8 == 0 else " " * (label_w - 1)
        cells = []
        for c in range(cols):
            top, bot = rgb[r, c], rgb[r + 1, c]
            if bot[0] < 0:
                cells.append(f"\x1b[38;2;{top[0]};{top[1]};{top[2]}m\u2580\x1b[0m")
            else:
                cells.append(
                    f"\x1b[38;2;{top[0]};{top[1]};{top[2]};48;2;{bot[0]};{bot[1]};{bot[2]}m\u2580\x1b[0m"
                )
        lines.append(f"{label} " + "".join(cells))
    lines.append(_column_axis(cols, n_cols, label_w))
    return "\n".join(lines)


def _column_axis(cols: int, n_cols: int, label_w: int) -> str:
    axis = [" "] * (cols + 1)
    for tick in (0, n_cols // 2, n_cols):
        pos = min(cols, int(round(tick * cols / max(n_cols, 1))))
        txt = str(tick)
        pos = min(pos, cols + 1 - len(txt))
        axis[pos : pos + len(txt)] = list(txt)
    return " " * label_w + "".join(axis).rstrip() + "  (columns)"


def _shaded(scaled: np.ndarray, shape: tuple[int, ...], title: str, hi: float, n_rows: int, n_cols: int,
            label_w: int) -> str:
    """The heatmap as shade characters (``SHADES``: blank = 0, █ = the max), for no colour."""
    rows, cols = scaled.shape
    idx = np.clip(np.round(np.nan_to_num(scaled) * (len(SHADES) - 1)), 0, len(SHADES) - 1).astype(int)
    dims = " x ".join(str(s) for s in shape)
    lines = [f"{title}  {dims}, {rows}x{cols} blocks of mean |W|, max {hi:.3g} ({SHADES[-1]}), shades {SHADES[1:]}"]
    for r in range(rows):
        label = str(int(round(r * n_rows / rows))).rjust(label_w - 1) if r % 4 == 0 else " " * (label_w - 1)
        lines.append(f"{label} " + "".join(SHADES[i] for i in idx[r]))
    lines.append(_column_axis(cols, n_cols, label_w))
    return "\n".join(lines)


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


def _fit(title: str, width: int) -> str:
    """plotext drops a title wider than its canvas (the figure less the y tick labels): shorten it."""
    room = max(width - 12, 8)
    return title if len(title) <= room else title[: room - 1] + "…"


def _ticks_for(x: Sequence[int], most: int = 10) -> list[int]:
    x = list(x)
    step = max(1, math.ceil(len(x) / most))
    return x[::step]


def series_figure(
    x: Sequence[int],
    series: Sequence[tuple[str, Sequence[float]]],
    width: int,
    height: int,
    title: str,
    *,
    xlabel: str = "layer",
    log: bool = False,
) -> str:
    """Lines over integer x (layers, plan positions), one per ``(label, values)``.

    ``log``: plotted as log10 on a linear axis (plotext log scales raise) with the y ticks
    labelled in real values; values <= 0 sit at the smallest positive one. Non-finite
    points are left out.
    """
    xs = np.asarray(list(x), dtype=np.float64)
    ys = [(label, np.asarray(v, dtype=np.float64)) for label, v in series]
    finite = np.concatenate([v[np.isfinite(v)] for _, v in ys]) if ys else np.array([])
    if xs.size == 0 or finite.size == 0:
        return f"{title}: nothing to plot"
    floor = 0.0
    if log:
        pos = finite[finite > 0]
        if pos.size == 0:
            return f"{title}: nothing positive to plot on a log scale"
        floor = float(pos.min())
    from lminspect.plots import legend_lines, line_markers

    colours = ["cyan", "blue", "orange", "red", "green", "magenta"]
    markers = line_markers(len(ys), distinct=True)  # lines differ without colour too
    lo, hi = math.inf, -math.inf
    # a short figure (80x24) or many lines: the legend goes under the figure, off the data
    legend = legend_lines([lb for lb, _ in ys], markers, colours, width) if len(ys) > 1 and (
        len(ys) > 3 or height < 20) else []
    with PLOT_LOCK:
        if log:
            title = title + " (log scale)" if len(title) + 12 <= width - 12 else title + " (log)"
        plt = _begin(width, max(5, height - len(legend)), _fit(title, width))
        for i, (label, v) in enumerate(ys):
            keep = np.isfinite(v)
            if not keep.any():
                continue
            y = np.log10(np.maximum(v[keep], floor)) if log else v[keep]
            lo, hi = min(lo, float(y.min())), max(hi, float(y.max()))
            plt.plot(xs[keep].tolist(), y.tolist(), label=None if legend else label, color=colours[i % len(colours)],
                     marker=markers[i % len(markers)])
        ticks = _ticks_for([int(t) for t in xs])
        plt.xticks(ticks, [str(t) for t in ticks])
        if log:
            if hi - lo < 1e-9:
                lo, hi = lo - 0.5, hi + 0.5
            yt = np.linspace(lo, hi, 5).tolist()
            plt.yticks(yt, [f"{10 ** t:.3g}" for t in yt])
        plt.xlabel(xlabel)
        return "\n".join([plt.build().rstrip("\n"), *legend])


def dims_figure(values: Sequence[float], width: int, height: int, title: str,
                mark: Sequence[int] = ()) -> str:
    """One value per dimension (std, |x| max, ... of an activation site); ``mark`` dims get an x.

    More dimensions than braille dots across (2 per column): each run of dimensions is drawn
    by its largest-|x| member, so spikes survive (and an 8k-wide site draws in ~20 ms, not 100).
    """
    v = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(v)
    if v.size == 0 or not keep.any():
        return f"{title}: nothing to plot"
    dims = np.nonzero(keep)[0]
    buckets = 2 * max(width, 20)
    if dims.size > 2 * buckets:
        a = np.abs(v[dims])
        edges = np.linspace(0, dims.size, buckets + 1).astype(np.int64)
        dims = np.array([dims[lo + int(np.argmax(a[lo:hi]))] for lo, hi in zip(edges[:-1], edges[1:], strict=True)
                         if hi > lo])
    with PLOT_LOCK:
        plt = _begin(width, height, _fit(title, width))
        plt.plot(dims.tolist(), v[dims].tolist(), color="cyan", marker="braille")
        marked = [int(d) for d in mark if 0 <= int(d) < v.size and keep[int(d)]]
        if marked:
            plt.scatter(marked, v[marked].tolist(), color="red", marker="x")
        ticks = sorted({int(round(t)) for t in np.linspace(0, v.size - 1, 5)})
        plt.xticks(ticks, [str(t) for t in ticks])
        plt.xlabel("dimension")
        return plt.build()


def by_layer_figure(
    layers: Sequence[int], columns: dict[str, Sequence[float | None]], stat: str, width: int, height: int
) -> str:
    """``lminspect.plots.by_layer_figure`` (shared with ``stats --by-layer`` and the REPL) at
    the widget's size, under ``PLOT_LOCK``."""
    from lminspect.plots import by_layer_figure as figure

    title = f"{stat} by layer"
    if not layers or not columns:
        return f"{title}: nothing to plot"
    width, height = max(width, 20), max(height, 6)
    with PLOT_LOCK:
        return figure(layers, columns, stat, title=_fit(title, width), width=width, height=height, color=True,
                      marks=True)
