"""Training-curve figures drawn with plotext, shared by ``lminspect plot`` and the TUI.

Everything here is a pure function: data helpers return lists, and :func:`plot_runs`
returns the figure as text (``plt.build()``), so the TUI can put the same text in a
widget and tests can assert on it.

- Smoothing is a centred triangular window (weights ``n+1-|k|``, renormalised at the
  ends), so a smoothed curve stays aligned with the raw one instead of lagging it.
- ``diff`` plots each run minus a baseline (default: the run with the most tokens, as
  lmplay's plotter does) on the baseline's x grid, linearly interpolated, cut where
  either run ends. The baseline itself is the zero line.
- Log scale plots ``log10(value)`` on a linear axis: plotext's own log axes are buggy
  (and raise inside textual-plotext). With ``diff`` this is the difference of log10
  values, i.e. the log of the ratio to the baseline.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lminspect.errors import UserError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
X_COLUMNS = {"tokens": "tokens", "steps": "step", "step": "step", "time": "time", "flops": "flops"}
METRIC_LABELS = {"loss": "train loss", "acc": "train accuracy", "val_loss": "validation loss",
                 "val_acc": "validation accuracy", "lr": "learning rate", "grad_norm": "gradient norm",
                 "tok_s": "tokens/s"}


def smooth(values: Sequence[float], n: int) -> list[float]:
    """Centred triangular moving average of half-width ``n`` (``n <= 0``: unchanged)."""
    vals = [float(v) for v in values]
    if n <= 0 or len(vals) < 2:
        return vals
    out = []
    for i in range(len(vals)):
        acc = wsum = 0.0
        for j in range(max(0, i - n), min(len(vals), i + n + 1)):  # only the points that exist
            w = n + 1 - abs(j - i)
            acc += w * vals[j]
            wsum += w
        out.append(acc / wsum)
    return out


def interp(xs: Sequence[float], ys: Sequence[float], grid: Sequence[float]) -> list[float]:
    """Linear interpolation of ``(xs, ys)`` (xs increasing) at ``grid``; nan outside ``xs``."""
    out = []
    j = 0
    n = len(xs)
    for g in grid:
        if n == 0 or g < xs[0] or g > xs[-1]:
            out.append(float("nan"))
            continue
        while j + 1 < n and xs[j + 1] < g:
            j += 1
        if xs[j] == g or j + 1 >= n:
            out.append(float(ys[j]))
            continue
        x0, x1 = xs[j], xs[j + 1]
        t = (g - x0) / (x1 - x0) if x1 != x0 else 0.0
        out.append(ys[j] + t * (ys[j + 1] - ys[j]))
    return out


def run_series(run: Any, metric: str = "loss", x: str = "tokens", smooth_n: int = 0,
               log: bool = False) -> tuple[list[float], list[float]]:
    """One run's ``(xs, ys)``: missing rows dropped, smoothed, optionally log10'd."""
    xcol = X_COLUMNS.get(x)
    if xcol is None:
        raise UserError(f"--x {x!r}: choose tokens, steps, time or flops")
    xs, ys = run.series(metric, xcol)
    ys = smooth(ys, smooth_n)
    if log:
        pairs = [(a, math.log10(b)) for a, b in zip(xs, ys, strict=True) if b > 0]
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    return list(xs), ys


def pick_baseline(runs: Sequence[Any], baseline: Any = None) -> Any:
    """The run named/given as ``baseline``, else the one with the most tokens (lmplay's rule)."""
    if baseline is None:
        return max(runs, key=lambda r: r.tokens)
    if isinstance(baseline, str):
        for r in runs:
            if baseline in (r.name, str(r.path)) or str(r.path).rstrip("/").endswith(baseline.rstrip("/")):
                return r
        raise UserError(f"--baseline {baseline!r} is not one of the plotted runs "
                        f"({', '.join(r.name for r in runs)})")
    return baseline


def diff_series(runs: Sequence[Any], metric: str = "loss", x: str = "tokens", baseline: Any = None,
                smooth_n: int = 0, log: bool = False) -> dict[str, tuple[list[float], list[float]]]:
    """``{run name: (grid, run - baseline)}`` on the baseline's x grid, cut where either ends."""
    base = pick_baseline(runs, baseline)
    bx, by = run_series(base, metric, x, smooth_n, log)
    out: dict[str, tuple[list[float], list[float]]] = {}
    for r in runs:
        rx, ry = run_series(r, metric, x, smooth_n, log)
        vals = interp(rx, ry, bx)
        pairs = [(g, v - b) for g, v, b in zip(bx, vals, by, strict=True) if not math.isnan(v)]
        out[_label(r, runs)] = ([p[0] for p in pairs], [p[1] for p in pairs])
    return out


def _label(run: Any, runs: Sequence[Any]) -> str:
    names = [r.name for r in runs]
    if names.count(run.name) > 1:
        return str(run.path)
    return run.name


@dataclass
class LineData:
    """What a line figure shows: ``{label: (xs, ys)}`` plus its words. The terminal figure
    (:func:`lines_figure`) and the saved one (``lminspect.figures.save_lines``) draw the same."""

    series: dict[str, tuple[list[float], list[float]]]
    title: str
    xlabel: str
    ylabel: str = ""


_XLABELS = {"tokens": "tokens", "steps": "steps", "step": "steps", "time": "seconds", "flops": "training FLOPs"}


def curve_data(runs: Sequence[Any], metric: str = "loss", *, x: str = "tokens", diff: bool = False,
               baseline: Any = None, smooth_n: int = 0, log: bool = False, title: str | None = None) -> LineData:
    """The lines of ``plot``: one per run (or per run minus the baseline with ``diff``)."""
    if not runs:
        raise UserError("no runs to plot")
    if diff:
        raw = diff_series(runs, metric, x, baseline, smooth_n, log)
        base_name = _label(pick_baseline(runs, baseline), runs)
    else:
        raw = {_label(r, runs): run_series(r, metric, x, smooth_n, log) for r in runs}
        base_name = None
    series = {(f"{n} (baseline)" if n == base_name else n): xy for n, xy in raw.items() if xy[0]}
    if not series:
        raise UserError(f"no {metric!r} values to plot in {', '.join(r.name for r in runs)}")
    label = METRIC_LABELS.get(metric, metric)
    if log:
        label = f"log10 {label}"
    if diff:
        label = f"{label} - baseline ({base_name})"
    return LineData(series, title or label, _XLABELS[x], label)


def plot_runs(runs: Sequence[Any], metric: str = "loss", *, x: str = "tokens", diff: bool = False,
              baseline: Any = None, smooth_n: int = 0, log: bool = False, width: int = 100,
              height: int = 25, color: bool = True, title: str | None = None, marks: bool | None = None) -> str:
    """The figure as text: one line per run (or per run minus the baseline with ``diff``)."""
    d = curve_data(runs, metric, x=x, diff=diff, baseline=baseline, smooth_n=smooth_n, log=log, title=title)
    return lines_figure(d.series, title=d.title, xlabel=d.xlabel, width=width, height=height, color=color,
                        marks=marks)


_PLAIN_MARKERS = "ox+*#%@=&~"
_COLORS = ["blue+", "red+", "green+", "orange+", "magenta+", "cyan+", "yellow+", "gray+", "blue", "red"]
LEGEND_INSIDE_MAX = 3  # more lines than this: the legend goes under the figure, off the data


def si(v: float) -> str:
    """A short tick label: 950, 12k, 3.4M, 12G, 1.5T (plotext would print 27000000000)."""
    a = abs(v)
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if a >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


def _nice_ticks(lo: float, hi: float, n: int) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step) + 1)]


def line_markers(n_lines: int, distinct: bool) -> list[str]:
    """The marker of each line, cycled: ``braille`` (the finest) for one line, else with
    ``distinct`` one character per line (``o``, ``x``, ``+``...), so lines and their legend
    entries differ without colour too."""
    return list(_PLAIN_MARKERS) if distinct and n_lines > 1 else ["braille"]


def legend_lines(labels: list[str], markers: list[str], colors: list[str] | None, width: int) -> list[str]:
    """``oo name  xx other ...`` wrapped to ``width``: the legend beside the data, not on it."""
    import plotext as plt

    lines, cur, cur_len = [], "", 0
    for k, label in enumerate(labels):
        m = markers[k % len(markers)]
        item = f"{'▄▄' if m == 'braille' else m * 2} {label}"
        shown = plt.colorize(item, colors[k % len(colors)]) if colors else item
        if cur and cur_len + 2 + len(item) > width:
            lines.append(cur)
            cur, cur_len = "", 0
        cur, cur_len = (cur + "  " + shown, cur_len + 2 + len(item)) if cur else (shown, len(item))
    return [*lines, cur] if cur else lines


def lines_figure(series: dict[str, Any], *, title: str = "", xlabel: str = "", xs: Sequence[float] | None = None,
                 width: int = 100, height: int = 25, color: bool = False, marks: bool | None = None) -> str:
    """A plotext line plot of ``{label: ys}`` (or ``{label: (xs, ys)}``) as text; NaNs are
    left out of their line. Each line has its own marker character when ``marks`` (default:
    without colour, where braille lines all look alike; the TUI asks for them in colour too,
    since a terminal may show none); with more than three lines the legend goes under the
    figure; large x values get short ticks."""
    import plotext as plt

    markers = line_markers(len(series), not color if marks is None else marks)
    colors = _COLORS if color else None
    labels = [str(k) for k in series]
    legend = legend_lines(labels, markers, colors, width) if len(series) > LEGEND_INSIDE_MAX else []
    plt.clear_figure()
    plt.plotsize(width, max(5, height - len(legend)))
    plt.theme("pro" if color else "clear")
    all_x: set[float] = set()
    for k, (label, ys) in enumerate(series.items()):
        x, y = ys if isinstance(ys, tuple) else (xs if xs is not None else range(len(ys)), ys)
        pts = [(float(a), float(b)) for a, b in zip(x, y, strict=True) if b is not None and not math.isnan(float(b))]
        if pts:
            kw: dict[str, Any] = {"marker": markers[k % len(markers)]}
            if colors:
                kw["color"] = colors[k % len(colors)]
            if not legend:
                kw["label"] = str(label)
            plt.plot([a for a, _ in pts], [b for _, b in pts], **kw)
            all_x.update(a for a, _ in pts)
    if all_x:
        lo, hi = min(all_x), max(all_x)
        if max(abs(lo), abs(hi)) >= 1e5:  # tokens, FLOPs: 12G, not 12000000000
            ticks = _nice_ticks(lo, hi, max(2, width // 14))
            plt.xticks(ticks, [si(t) for t in ticks])
        elif all(a.is_integer() for a in all_x):  # layers, steps: integer ticks, not 0.75, 1.50...
            step = max(1, math.ceil((hi - lo) / max(1, width // 12)))
            plt.xticks(list(range(int(lo), int(hi) + 1, step)))
    plt.title(title)
    plt.xlabel(xlabel)
    text = "\n".join([plt.build().rstrip("\n"), *legend])
    plt.clear_figure()
    return text if color else _ANSI.sub("", text)


def by_layer_data(layers: Sequence[int], columns: dict[str, Sequence[float | None]], stat: str,
                  title: str | None = None) -> LineData:
    """``weights.stats.by_layer``'s ``(layers, {component: values})`` as one line per component."""
    series = {c: (list(layers), list(v)) for c, v in columns.items()}
    return LineData(series, title or f"{stat} by layer", "layer", stat)  # type: ignore[arg-type]


def by_layer_figure(layers: Sequence[int], columns: dict[str, Sequence[float | None]], stat: str, *,
                    title: str | None = None, width: int = 100, height: int = 25, color: bool = False,
                    marks: bool | None = None) -> str:
    """One line per component over the layers (a None leaves a gap): ``stats --by-layer``,
    the REPL's ``plot_by_layer`` and the TUI's layers overview."""
    d = by_layer_data(layers, columns, stat, title)
    return lines_figure(d.series, title=d.title, xlabel=d.xlabel, width=width, height=height, color=color,
                        marks=marks)


def saturation_rows(run: Any) -> list[int]:
    """Row indices at the run's checkpoint steps (every ``save_every``, plus the last row); all
    rows when that gives fewer than 3 points."""
    steps = run.columns.get("step", [])
    every = (run.config.get("train") or {}).get("save_every") or 0
    every = every if isinstance(every, int) and not isinstance(every, bool) else 0
    rows = [i for i, s in enumerate(steps)  # a row without a usable step (NaN, text) is no checkpoint
            if every and isinstance(s, int | float) and math.isfinite(s) and int(s) % every == 0]
    if steps and (not rows or rows[-1] != len(steps) - 1):
        rows.append(len(steps) - 1)
    return rows if len(rows) >= 3 else list(range(len(steps)))


def saturation_panels(runs: Sequence[Any], metrics: Sequence[str] | None = None) -> list[str]:
    """loss, acc, then ``seen_<metric>`` (mean metadata of the data seen) for ``metrics``
    (default: ppl when the runs have it, else the first two metadata columns)."""
    have: list[str] = []
    for r in runs:
        have += [k for k in r.columns if k.startswith("seen_") and k != "seen_docs" and k not in have]
    if metrics:
        want = [m if m.startswith("seen_") else f"seen_{m}" for m in metrics]
        bad = [m for m in want if m not in have]
        if bad:
            raise UserError(f"--saturation: no metadata column {', '.join(b[5:] for b in bad)} in the runs "
                            f"(have: {', '.join(h[5:] for h in have) or 'none; train with --metadata'})")
    else:
        want = ["seen_ppl"] if "seen_ppl" in have else have[:2]
    return ["loss", "acc", *want]


def saturation_data(runs: Sequence[Any], *, metrics: Sequence[str] | None = None, x: str = "tokens",
                    smooth_n: int = 0) -> list[LineData]:
    """One :class:`LineData` per saturation panel (loss, acc, ``seen_<metric>``...), the
    points taken at the runs' checkpoint steps, one line per run."""
    if not runs:
        raise UserError("no runs to plot")
    xcol = X_COLUMNS.get(x)
    if xcol is None:
        raise UserError(f"--x {x!r}: choose tokens, steps, time or flops")
    out = []
    for metric in saturation_panels(runs, metrics):
        series: dict[str, tuple[list[float], list[float]]] = {}
        for r in runs:
            if metric not in r.columns or xcol not in r.columns:
                continue
            idx = saturation_rows(r)
            ys_all = smooth(r.columns[metric], smooth_n) if smooth_n else r.columns[metric]
            pts = [(r.columns[xcol][i], ys_all[i]) for i in idx if not math.isnan(ys_all[i])]
            if pts:
                series[_label(r, runs)] = ([p[0] for p in pts], [p[1] for p in pts])
        name = metric.removeprefix("seen_")
        title = METRIC_LABELS.get(metric, f"mean {name} seen" if metric.startswith("seen_") else metric)
        out.append(LineData(series, title, _XLABELS[x], title))
    return out


def plot_saturation(runs: Sequence[Any], *, metrics: Sequence[str] | None = None, x: str = "tokens",
                    smooth_n: int = 0, width: int = 120, height: int = 25, color: bool = True) -> str:
    """llama2_prebiasing's saturation view: per checkpoint, side by side, the model's loss and
    accuracy and the running mean of each metadata metric over the samples seen so far, one line
    per run, so sorted and shuffled runs compare on one screen."""
    panels = saturation_data(runs, metrics=metrics, x=x, smooth_n=smooth_n)
    # one plotext figure per panel, joined side by side here (plotext's subplots keep state
    # between figures and garble a second call)
    pw = max(20, width // len(panels))
    figures = [lines_figure(d.series, title=d.title, xlabel=d.xlabel, width=pw, height=height,
                            color=color).splitlines() for d in panels]
    n_lines = max(len(f) for f in figures)
    out = []
    for k in range(n_lines):
        parts = []
        for f in figures:
            line = f[k] if k < len(f) else ""
            parts.append(line + " " * max(0, pw - len(_ANSI.sub("", line))))
        out.append("".join(parts).rstrip())
    return "\n".join(out)


def histogram_text(counts: Sequence[float], lo: float, hi: float, *, rows: int = 16, width: int = 40,
                   title: str = "") -> str:
    """Equal-width bins over ``[lo, hi]`` as horizontal bars, one line per bin: its range, a bar
    (eighth-block steps) and the count. Plain text: it reads without colour and in a pipe.
    ``rows``: adjacent bins are summed down to at most this many lines."""
    n = len(counts)
    if n == 0:
        return f"{title}: no values" if title else "no values"
    group = max(1, math.ceil(n / rows))
    merged = [sum(counts[i:i + group]) for i in range(0, n, group)]
    step = (hi - lo) / n * group
    top = max(merged) or 1
    eighths = " ▏▎▍▌▋▊▉"
    lines = [title] if title else []
    for k, c in enumerate(merged):
        a, b = lo + k * step, min(hi, lo + (k + 1) * step)
        full, part = divmod(round(c / top * width * 8), 8)
        bar = "█" * full + (eighths[part] if part else "")
        lines.append(f"{a:>10.3g} .. {b:<10.3g} {bar:<{width}} {int(c):,}")
    return "\n".join(lines)


def stats_histogram(stats: dict[str, Any]) -> str | None:
    """A weight tensor's value histogram (``weights.stats``: 64 bins over [min, max]) as
    :func:`histogram_text` under its name and sample size; None for a constant tensor. The
    CLI's ``stats`` prints it and the REPL's ``Tensor.hist()`` returns it."""
    counts, edges = stats.get("hist"), stats.get("hist_edges")
    if not counts or not edges or len(counts) < 2:
        return None  # a constant tensor: its one value is in the table
    total = int(sum(counts))
    where = f"a sample of {total:,} of {stats['numel']:,} values" if stats.get("sampled") else f"{total:,} values"
    return histogram_text(counts, edges[0], edges[1], title=f"{stats.get('canonical') or stats['name']}: {where}")
