"""Result objects that read well in a REPL: :class:`Table` (rows of dicts) and :class:`Figure` (plot text).

Why own classes: ``m.stats()`` or ``runs.table()`` should print as a table when echoed in
the REPL (``__repr__`` plain text, ``__rich__`` for rich consoles), yet stay plain data for
scripts (``to_list()``, ``to_pandas()``, ``to_csv()``, ``to_json()``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lminspect.errors import UserError

MAX_ROWS = 40  # rows shown by repr; the data keeps them all


def fmt(v: Any) -> str:
    """One cell as short text: floats to 4 significant digits, shapes as ``AxB``."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}"
    if isinstance(v, tuple | list) and all(isinstance(x, int) for x in v):
        return "x".join(str(x) for x in v) if v else "()"
    return str(v)


class Table:
    """Rows (dicts with the same keys) with a readable repr and exports."""

    def __init__(self, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
                 title: str | None = None) -> None:
        self.rows = [dict(r) for r in rows]
        if columns is None:
            cols: list[str] = []
            for r in self.rows:
                cols.extend(k for k in r if k not in cols)
            columns = cols
        self.columns = list(columns)
        self.title = title

    # ---- data access
    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __getitem__(self, key: int | str) -> Any:
        """``table[3]`` is a row dict, ``table["mean"]`` a column list."""
        if isinstance(key, str):
            if key not in self.columns:
                from lminspect.weights.stats import stat_key  # `kurt`, `~0`: the CLI's old headers

                key = stat_key(key)
            if key not in self.columns:
                raise KeyError(f"no column {key!r} (columns: {', '.join(self.columns)})")
            return [r.get(key) for r in self.rows]
        return self.rows[key]

    def to_list(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.rows]

    def to_pandas(self) -> Any:
        try:
            import pandas as pd
        except ImportError:
            raise UserError("to_pandas() needs pandas: pip install pandas") from None
        return pd.DataFrame(self.rows, columns=self.columns)

    def to_csv(self, path: str | Path | None = None) -> str:
        """CSV text (lists/tuples as ``AxB`` or JSON); written atomically when ``path`` is given."""
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(self.columns)
        for r in self.rows:
            w.writerow([_csv_cell(r.get(c)) for c in self.columns])
        text = buf.getvalue()
        if path is not None:
            from lminspect.fsutil import atomic_write_text

            atomic_write_text(path, text)
        return text

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_list(), indent=1, default=_json_default)
        if path is not None:
            from lminspect.fsutil import atomic_write_text

            atomic_write_text(path, text + "\n")
        return text

    # ---- display
    def text(self, max_rows: int | None = MAX_ROWS) -> str:
        """Plain fixed-width text (what ``repr`` shows)."""
        rows = self.rows if max_rows is None else self.rows[:max_rows]
        cells = [[fmt(r.get(c)) for c in self.columns] for r in rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(self.columns)]
        widths = [min(w, 60) for w in widths]

        def line(vals: list[str]) -> str:
            return "  ".join(_clip(v, w).ljust(w) for v, w in zip(vals, widths, strict=True)).rstrip()

        out = [self.title] if self.title else []
        out.append(line(self.columns))
        out.append("  ".join("-" * w for w in widths))
        out.extend(line(row) for row in cells)
        if len(rows) < len(self.rows):
            out.append(f"... {len(self.rows) - len(rows)} more rows ({len(self.rows)} in all)")
        return "\n".join(out)

    def __repr__(self) -> str:
        return self.text()

    __str__ = __repr__

    def __rich__(self) -> Any:
        from rich.markup import escape
        from rich.table import Table as RichTable

        t = RichTable(title=escape(str(self.title)) if self.title else None, header_style="bold")
        for c in self.columns:
            t.add_column(c, justify="right" if self.rows and _numeric(self.rows[0].get(c)) else "left",
                         overflow="fold")  # a narrow console wraps a cell, never cuts it
        for r in self.rows[:MAX_ROWS]:
            t.add_row(*[escape(fmt(r.get(c))) for c in self.columns])
        if len(self.rows) > MAX_ROWS:
            t.caption = f"... {len(self.rows) - MAX_ROWS} more rows ({len(self.rows)} in all)"
        return t

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython
        p.text(self.text())


class Figure:
    """A plotext figure as text: echo it in the REPL, ``str()`` it, or ``save()`` it."""

    def __init__(self, text: str, title: str | None = None) -> None:
        self.text = text
        self.title = title

    def __repr__(self) -> str:
        return self.text

    __str__ = __repr__

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.text)

    def save(self, path: str | Path) -> Path:
        from lminspect.fsutil import atomic_write_text

        atomic_write_text(path, self.text + "\n")
        return Path(path)


def _clip(s: str, w: int) -> str:
    return s if len(s) <= w else s[: w - 1] + "~"


def _numeric(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _csv_cell(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return fmt(v) if all(isinstance(x, int) for x in v) else json.dumps(v, default=_json_default)
    return "" if v is None else v


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)
