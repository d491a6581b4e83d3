"""Text for the Weights tab: statistics as table rows and cells, status lines, and a
DataTable filler that keeps the cursor while a table fills in. Pure functions (no app
state), so they are easy to test and to reuse."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from rich.text import Text
from textual.widgets import DataTable


def progress_line(stage: str, elapsed: float) -> str:
    """The status line while statistics compute: ``computing statistics: STAGE ... 1.4 s``."""
    what = f": {stage}" if stage else ""
    return f"computing statistics{what} ... {elapsed:.1f} s"


def group_progress_line(index: int, total: int, name: str, elapsed: float) -> str:
    """The status line while a group's statistics compute: ``statistics 12/270: NAME ... 3.1 s``."""
    return f"statistics {index}/{total}: {name} ... {elapsed:.1f} s"


def cell(value: Any) -> str:
    """A number in an overview table: 3 significant digits (as ``stats --by-layer``), ``-`` when missing."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return "-"
    return f"{float(value):.3g}"


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int | np.integer):
        return f"{int(v):,}"
    if isinstance(v, float | np.floating):
        return f"{float(v):.6g}"
    return str(v)


_NOT_IN_TABLE = {"name", "canonical", "hist_edges", "edges", "bin_edges"}


def scalar_stats(stats: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The rows of the statistics table: every scalar in the stats dict, in its order."""
    rows = []
    for key, value in stats.items():
        if key in _NOT_IN_TABLE:
            continue
        if key == "kurtosis" and isinstance(value, float | np.floating):
            # excess kurtosis comes from float32 power sums: ~1e-5 absolute, so 4 decimals
            rows.append((str(key), f"{float(value):.4f}"))
        elif isinstance(value, int | float | np.integer | np.floating | bool):
            rows.append((str(key), _fmt(value)))
        elif isinstance(value, str) and len(value) < 60:
            rows.append((str(key), value))
        elif isinstance(value, list | tuple) and 0 < len(value) <= 4 and all(isinstance(x, int | float) for x in value):
            rows.append((str(key), ", ".join(_fmt(x) for x in value)))
    return rows


def histogram_of(stats: Mapping[str, Any]) -> tuple[list[float], list[float]] | None:
    """(counts, edges) from the stats dict, whichever of the usual spellings it uses."""
    h = stats.get("histogram") or stats.get("hist")
    if h is None:
        return None
    edges_in = stats.get("hist_edges")
    if isinstance(h, list) and edges_in is not None and len(edges_in) == 2 and len(h) != 2:
        # the weight store gives counts plus the [lo, hi] range of equal-width bins
        lo, hi = float(edges_in[0]), float(edges_in[1])
        return list(map(float, h)), np.linspace(lo, hi, len(h) + 1).tolist()
    if isinstance(h, Mapping):
        counts = h.get("counts") or h.get("count") or h.get("values")
        edges = h.get("edges") or h.get("bin_edges") or h.get("bins")
    elif isinstance(h, list | tuple) and len(h) == 2:
        counts, edges = h
    else:
        return None
    if counts is None or edges is None:
        return None
    return list(map(float, counts)), list(map(float, edges))


def singular_values_of(stats: Mapping[str, Any]) -> list[float] | None:
    for key in ("singular_values", "sv", "svals", "spectrum"):
        sv = stats.get(key)
        if sv is not None:
            return [float(x) for x in sv]
    return None


def relative_name(name: str, path: tuple[str, ...]) -> str:
    """``q.weight`` for ``layers.3.attn.q.weight`` under ``layers/3/attn``: the name less the
    longest part of the group's path it starts with."""
    for k in range(len(path), 0, -1):
        prefix = ".".join(path[:k]) + "."
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def fill_table(table: DataTable, columns: list[str], rows: list[tuple[str, list[str]]]) -> None:
    """Show ``rows`` (``(key, cells)``) under ``columns``, changing only what changed, so a
    table that fills in keeps its cursor and scroll position. Cells are right-aligned but in
    the first (and, with ``tensor``, the second: shape) column."""
    left = 2 if columns[:1] == ["tensor"] else 1

    def aligned(cells: list[str]) -> list[str | Text]:
        return [c if i < left else Text(c, justify="right") for i, c in enumerate(cells)]

    if [str(c.label) for c in table.ordered_columns] != columns:
        table.clear(columns=True)
        for i, column in enumerate(columns):
            table.add_column(column if i < left else Text(column, justify="right"), key=column)
    keys = [str(row.key.value) for row in table.ordered_rows]
    if keys != [key for key, _ in rows[: len(keys)]]:
        table.clear()
        keys = []
    for key, cells in rows[: len(keys)]:
        for column, value in zip(columns, aligned(cells), strict=True):
            if str(table.get_cell(key, column)) != str(value):
                table.update_cell(key, column, value, update_width=True)
    for key, cells in rows[len(keys):]:
        table.add_row(*aligned(cells), key=key)
