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
        for k in range(-n, n + 1):
            j = i + k
            if 0 <= j < len(vals):
                w = n + 1 - abs(k)
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


def plot_runs(runs: Sequence[Any], metric: str = "loss", *, x: str = "tokens", diff: bool = False,
              baseline: Any = None, smooth_n: int = 0, log: bool = False, width: int = 100,
              height: int = 25, color: bool = True, title: str | None = None) -> str:
    """The figure as text: one line per run (or per run minus the baseline with ``diff``)."""
    import plotext as plt

    if not runs:
        raise UserError("no runs to plot")
    if diff:
        series = diff_series(runs, metric, x, baseline, smooth_n, log)
        base_name = _label(pick_baseline(runs, baseline), runs)
    else:
        series = {_label(r, runs): run_series(r, metric, x, smooth_n, log) for r in runs}
        base_name = None
    plt.clear_figure()
    plt.plotsize(width, height)
    plt.theme("pro" if color else "clear")
    drew = False
    for name, (xs, ys) in series.items():
        if not xs:
            continue
        label = f"{name} (baseline)" if name == base_name else name
        plt.plot(xs, ys, label=label, marker="braille")
        drew = True
    if not drew:
        raise UserError(f"no {metric!r} values to plot in {', '.join(r.name for r in runs)}")
    label = METRIC_LABELS.get(metric, metric)
    if log:
        label = f"log10 {label}"
    if diff:
        label = f"{label} - baseline ({base_name})"
    plt.title(title or label)
    plt.xlabel({"tokens": "tokens", "steps": "steps", "step": "steps", "time": "seconds",
                "flops": "training FLOPs"}[x])
    text = plt.build()
    plt.clear_figure()
    if not color:
        text = _ANSI.sub("", text)
    return text


_PLAIN_MARKERS = "ox+*#%@=&~"


def lines_figure(series: dict[str, Any], *, title: str = "", xlabel: str = "", xs: Sequence[float] | None = None,
                 width: int = 100, height: int = 25, color: bool = False) -> str:
    """A plotext line plot of ``{label: ys}`` (or ``{label: (xs, ys)}``) as text; NaNs are
    left out of their line."""
    import plotext as plt

    plt.clear_figure()
    plt.plotsize(width, height)
    plt.theme("pro" if color else "clear")
    all_x: set[float] = set()
    # without colour, braille lines all look alike: one character per line instead
    markers = ["braille"] if color or len(series) < 2 else list(_PLAIN_MARKERS)
    for k, (label, ys) in enumerate(series.items()):
        x, y = ys if isinstance(ys, tuple) else (xs if xs is not None else range(len(ys)), ys)
        pts = [(float(a), float(b)) for a, b in zip(x, y, strict=True) if b is not None and not math.isnan(float(b))]
        if pts:
            plt.plot([a for a, _ in pts], [b for _, b in pts], label=str(label), marker=markers[k % len(markers)])
            all_x.update(a for a, _ in pts)
    if all_x and all(a.is_integer() for a in all_x):  # layers, steps: integer ticks, not 0.75, 1.50...
        lo, hi = int(min(all_x)), int(max(all_x))
        step = max(1, math.ceil((hi - lo) / max(1, width // 12)))
        plt.xticks(list(range(lo, hi + 1, step)))
    plt.title(title)
    plt.xlabel(xlabel)
    text = plt.build()
    plt.clear_figure()
    return text if color else _ANSI.sub("", text)


def by_layer_figure(layers: Sequence[int], columns: dict[str, Sequence[float | None]], stat: str, *,
                    title: str | None = None, width: int = 100, height: int = 25, color: bool = False) -> str:
    """``weights.stats.by_layer``'s ``(layers, {component: values})`` as one line per
    component over the layers (a None leaves a gap): ``stats --by-layer``, the REPL's
    ``plot_by_layer`` and the TUI's layers overview."""
    series = {c: (list(layers), list(v)) for c, v in columns.items()}
    return lines_figure(series, title=title or f"{stat} by layer", xlabel="layer", width=width, height=height,
                        color=color)


def saturation_rows(run: Any) -> list[int]:
    """Row indices at the run's checkpoint steps (every ``save_every``, plus the last row); all
    rows when that gives fewer than 3 points."""
    steps = run.columns.get("step", [])
    every = int((run.config.get("train") or {}).get("save_every") or 0)
    rows = [i for i, s in enumerate(steps) if every and int(s) % every == 0]
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


def plot_saturation(runs: Sequence[Any], *, metrics: Sequence[str] | None = None, x: str = "tokens",
                    smooth_n: int = 0, width: int = 120, height: int = 25, color: bool = True) -> str:
    """llama2_prebiasing's saturation view: per checkpoint, side by side, the model's loss and
    accuracy and the running mean of each metadata metric over the samples seen so far, one line
    per run, so sorted and shuffled runs compare on one screen."""
    import plotext as plt

    if not runs:
        raise UserError("no runs to plot")
    xcol = X_COLUMNS.get(x)
    if xcol is None:
        raise UserError(f"--x {x!r}: choose tokens, steps, time or flops")
    panels = saturation_panels(runs, metrics)
    # one plotext figure per panel, joined side by side here (plotext's subplots keep state
    # between figures and garble a second call)
    pw = max(20, width // len(panels))
    figures: list[list[str]] = []
    for metric in panels:
        plt.clear_figure()
        plt.plotsize(pw, height)
        plt.theme("pro" if color else "clear")
        for r in runs:
            if metric not in r.columns or xcol not in r.columns:
                continue
            idx = saturation_rows(r)
            ys_all = smooth(r.columns[metric], smooth_n) if smooth_n else r.columns[metric]
            pts = [(r.columns[xcol][i], ys_all[i]) for i in idx if not math.isnan(ys_all[i])]
            if pts:
                plt.plot([p[0] for p in pts], [p[1] for p in pts], label=_label(r, runs), marker="braille")
        name = metric.removeprefix("seen_")
        plt.title(METRIC_LABELS.get(metric, f"mean {name} seen" if metric.startswith("seen_") else metric))
        plt.xlabel({"tokens": "tokens", "steps": "steps", "step": "steps", "time": "seconds",
                    "flops": "FLOPs"}[x])
        fig = plt.build()
        plt.clear_figure()
        figures.append((fig if color else _ANSI.sub("", fig)).splitlines())
    n_lines = max(len(f) for f in figures)
    out = []
    for k in range(n_lines):
        parts = []
        for f in figures:
            line = f[k] if k < len(f) else ""
            parts.append(line + " " * max(0, pw - len(_ANSI.sub("", line))))
        out.append("".join(parts).rstrip())
    return "\n".join(out)
