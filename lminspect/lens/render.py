"""Terminal renderings of the lens results, shared by the CLI, the REPL reprs and the TUI panel.

Tables are rich renderables; plots are plotext text (``lminspect.plots.lines_figure``); grids
are rich tables whose cells carry the value and a diverging background (blue negative, red
positive), so they read without colour too.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the result classes import this module for their reprs
    from lminspect.lens.attribution import DLAResult
    from lminspect.lens.logit_lens import LensResult
    from lminspect.lens.patching import PatchResult
    from lminspect.plots import LineData


SPACE_MARK = "␣"  # a space in a token, visible: ' time' and 'time' differ, a bare space is not blank
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", " ": SPACE_MARK}


def visible_token(s: str) -> str:
    """A token as it reads in a table: spaces as ``␣``, newlines and other control characters
    escaped once (a label already escaped, ``\\n``, stays as it is)."""
    return "".join(_ESCAPES.get(ch) or (ch if ch.isprintable() else repr(ch)[1:-1]) for ch in s)


def _tok(s: str, width: int = 10) -> str:
    """A token for a table cell: spaces visible, cut to ``width``, markup escaped (a token ``[/]`` is text)."""
    from rich.markup import escape

    s = visible_token(s)
    return escape(s if len(s) <= width else s[: width - 1] + "…")


def _esc(s: object) -> str:
    from rich.markup import escape

    return escape(str(s))


def lens_table(res: LensResult, title: str | None = None) -> Any:
    """Rows = read-outs (embed, each plan position), columns = top-k tokens with probabilities,
    then the target's rank and probability when there is a target."""
    from rich.table import Table

    tgt = res.target
    t = Table(title=_esc(title or f"logit lens: plan {res.plan}, token {res.position} {res.tokens[res.position]!r}"),
              title_justify="left")
    t.add_column("after", no_wrap=True)
    for k in range(res.top_probs.shape[1]):
        t.add_column(f"top {k + 1}", no_wrap=True)
    if tgt is not None:
        t.add_column(f"rank {_tok(tgt.text)}", justify="right")
        t.add_column("prob", justify="right")
    for r, label in enumerate(res.labels):
        cells = [_esc(label)] + [f"{_tok(tok)} {p:.2f}" for tok, p in zip(res.top_tokens[r], res.top_probs[r], strict=True)]
        if tgt is not None:
            rank = int(res.target_rank[r])
            cells += [f"[bold]{rank}[/bold]" if rank == 1 else str(rank), f"{res.target_prob[r]:.3f}"]
        t.add_row(*cells)
    return t


def lens_lines(results: dict[str, LensResult], what: str = "prob") -> LineData | None:
    """What :func:`lens_figure` draws (and a saved figure, ``figures.save_lines``): one line per
    plan; None without a target."""
    from lminspect.plots import LineData

    series: dict[str, Any] = {}
    target = None
    for name, res in results.items():
        if res.target is None:
            continue
        target = res.target
        ys = res.target_prob if what == "prob" else np.log10(res.target_rank.astype(float))
        series[name] = (list(range(len(ys))), [float(y) for y in ys])
    if not series:
        return None
    label = "probability" if what == "prob" else "log10 rank (0 = top)"
    return LineData(series, f"{label} of {target.text!r} after each plan position", "read-out row", label)


def lens_figure(results: dict[str, LensResult], what: str = "prob", width: int = 100, height: int = 20,
                color: bool = False) -> str:
    """The target's probability (``what="prob"``) or log10 rank (``"rank"``) per read-out row, one
    line per plan; x = read-out row (0 = embedding, p + 1 = after plan position p)."""
    from lminspect.plots import lines_figure

    d = lens_lines(results, what)
    if d is None:
        return ""
    return lines_figure(d.series, title=d.title, xlabel=d.xlabel, width=width, height=height, color=color)


def _cell_style(v: float, lim: float) -> str:
    if not math.isfinite(v) or lim == 0:
        return ""
    a = min(1.0, abs(v) / lim)
    base = (255, 255, 255)
    tip = (200, 40, 40) if v > 0 else (40, 80, 200)
    r, g, b = (int(x + (y - x) * a) for x, y in zip(base, tip, strict=True))
    fg = "white" if a > 0.6 else "black"
    return f"{fg} on rgb({r},{g},{b})"


def grid_table(grid: np.ndarray, rows: list[str], cols: list[str], title: str, row_title: str = "plan pos",
               fmt: str = "{:.2f}", lim: float | None = None) -> Any:
    """A numeric grid as a rich table with diverging cell colours (symmetric around 0)."""
    from rich.table import Table
    from rich.text import Text

    finite = grid[np.isfinite(grid)]
    if lim is None:
        lim = float(np.abs(finite).max()) if finite.size else 1.0
    t = Table(title=_esc(title), title_justify="left", padding=(0, 0), collapse_padding=True)
    t.add_column(row_title, no_wrap=True)
    for c in cols:
        t.add_column(_tok(c, 7), justify="right", no_wrap=True)
    for i, label in enumerate(rows):
        t.add_row(Text(label), *(Text(f"{fmt.format(v):>6}", style=_cell_style(float(v), lim)) for v in grid[i]))
    return t


def patch_table(res: PatchResult) -> Any:
    what = "head (all tokens)" if res.site == "head" else "token"
    return grid_table(res.recovered, res.rows, res.cols, row_title="plan pos",
                      title=f"patching {res.site} clean -> corrupt, plan {res.plan}: recovered fraction of "
                            f"{res.metric} (clean {res.clean:.3g}, corrupt {res.corrupt:.3g}); columns: {what}",
                      lim=max(1.0, float(np.nanmax(np.abs(res.recovered))) if res.recovered.size else 1.0))


def dla_table(res: DLAResult) -> Any:
    from rich.table import Table

    what = f"logit {res.target.text!r}" + (f" - logit {res.baseline.text!r}" if res.baseline else "")
    cap = "" if res.capped_logit is None else f" before the soft cap ({res.capped_logit:.3f} after)"
    t = Table(title=_esc(f"direct logit attribution to {what} = {res.logit:.3f}{cap}, plan {res.plan} "
                         f"(final-norm scale {res.scale:.3g} frozen)"), title_justify="left")
    for col, just in (("after", "left"), ("attn", "right"), ("mlp", "right"), ("total", "right")):
        t.add_column(col, justify=just)
    for row in res.rows():
        t.add_row(_esc(row["row"]), *("" if row[k] is None else f"{row[k]:+.3f}" for k in ("attn", "mlp", "total")))
    t.add_row("sum", "", "", f"{res.total:+.3f}")
    return t


def dla_heads_table(res: DLAResult) -> Any:
    return grid_table(res.heads, res.labels, [f"h{h}" for h in range(res.heads.shape[1])],
                      title="direct contribution per head (without attn.o's bias)", fmt="{:+.2f}")


def text_of(renderable: Any, width: int = 120) -> str:
    """Plain text of a rich renderable (for reprs and tests)."""
    import io

    from rich.console import Console

    buf = io.StringIO()
    Console(width=width, file=buf, color_system=None).print(renderable)
    return buf.getvalue()
