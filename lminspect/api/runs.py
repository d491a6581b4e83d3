"""``li.runs(dir)``, ``li.experiments()``, ``li.activations(dir)``: training runs and friends in the REPL."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lminspect.api.table import Figure, Table
from lminspect.errors import UserError
from lminspect.rundir import find_runs


class Runs(Sequence):
    """Training runs (``lminspect.train.runlog.Run``): ``.table()``, ``.plot()``, ``.diff()``."""

    def __init__(self, runs: Sequence[Any]) -> None:
        self._runs = list(runs)

    def __len__(self) -> int:
        return len(self._runs)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            for r in self._runs:
                if key in (r.name, str(r.path), r.path.name):
                    return r
            raise KeyError(f"no run named {key!r} (runs: {', '.join(self.names)})")
        if isinstance(key, slice):
            return Runs(self._runs[key])
        return self._runs[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._runs)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self._runs]

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()))

    def _ipython_key_completions_(self) -> list[str]:
        return self.names

    def table(self) -> Table:
        """One row per run: experiment, status, steps, tokens, last/best losses and accuracies."""
        rows = []
        for r in self._runs:
            last = r.last
            row: dict[str, Any] = {"name": r.name, "exp": r.config.get("experiment") or r.config.get("exp", ""),
                                   "params": r.config.get("n_params"), "status": r.status,
                                   "steps": len(r), "tokens": int(r.tokens) if r.tokens == r.tokens else 0}
            for m in ("loss", "acc", "val_loss", "val_acc"):
                col = [v for v in r.columns.get(m, []) if not math.isnan(v)]
                row[m] = col[-1] if col else None
            row["best_val_loss"] = min((v for v in r.columns.get("val_loss", []) if not math.isnan(v)), default=None)
            row["tok_s"] = last.get("tok_s")
            rows.append(row)
        return Table(rows, title=f"{len(rows)} runs")

    def plot(self, metric: str = "loss", *, diff: bool = False, baseline: Any = None, smooth: int = 0,
             x: str = "tokens", log: bool = False, width: int = 100, height: int = 25, color: bool = False) -> Figure:
        """Training curves as plotext text (the same figure as ``lminspect plot``)."""
        from lminspect.plots import plot_runs

        if not self._runs:
            raise UserError("no runs to plot")
        text = plot_runs(self._runs, metric, x=x, diff=diff, baseline=baseline, smooth_n=smooth, log=log,
                         width=width, height=height, color=color)
        return Figure(text, title=f"{metric}{' diff' if diff else ''}")

    def diff(self, baseline: Any = None, metric: str = "loss", **kw: Any) -> Figure:
        """Each run minus the baseline (default: the run with the most tokens, as lmplay does)."""
        return self.plot(metric, diff=True, baseline=baseline, **kw)

    def timeline(self, stat: str = "alpha", *, every: int = 1, layer: int | None = None,
                 tensors: Sequence[str] | None = None) -> Table:
        """A weight statistic across each run's checkpoints: a row per checkpoint, a column per
        component (mean over layers, or ``layer``'s), or per tensor matching ``tensors`` globs
        (``lminspect timeline``; see docs/compare.md)."""
        from lminspect.compare.checkpoints import list_checkpoints
        from lminspect.compare.timeline import select_checkpoints, stat_records, timeline_columns

        rows: list[dict[str, Any]] = []
        columns: list[str] = []
        for r in self._runs:
            cks = select_checkpoints(list_checkpoints(r.path), every)
            steps, toks, cols = timeline_columns(stat_records(cks, stat, tensors=tensors), layer=layer,
                                                 per_tensor=bool(tensors))
            columns += [c for c in cols if c not in columns]
            rows += [{"run": r.name, "step": s, "tokens": toks[k], **{c: v[k] for c, v in cols.items()}}
                     for k, s in enumerate(steps)]
        where = "per tensor" if tensors else (f"layer {layer}" if layer is not None else "mean over layers")
        return Table(rows, columns=["run", "step", "tokens", *columns], title=f"{stat} across checkpoints ({where})")

    def plot_timeline(self, stat: str = "alpha", *, every: int = 1, layer: int | None = None,
                      tensors: Sequence[str] | None = None, width: int = 100, height: int = 22) -> Figure:
        """:meth:`timeline` of one run as lines against steps."""
        from lminspect.compare.timeline import timeline_figure

        if len(self._runs) != 1:
            raise UserError(f"plot_timeline: one run at a time (li.runs('runs/x')), not {len(self._runs)}")
        t = self.timeline(stat, every=every, layer=layer, tensors=tensors)
        cols = {c: t[c] for c in t.columns[3:]}
        return Figure(timeline_figure(t["step"], cols, stat, width=width, height=height), title=t.title)

    def __repr__(self) -> str:
        return self.table().text()

    def __rich__(self) -> Any:
        return self.table().__rich__()


def runs(*paths: str | Path) -> Runs:
    """Runs under one or more folders (each folder a run, or holding runs up to 3 levels down)."""
    from lminspect.train.runlog import load_run

    if not paths:
        paths = ("runs",)
    found: dict[Path, str] = {}
    for p in paths:
        root = Path(p).expanduser()
        if not root.exists():
            raise UserError(f"{p}: no such directory")
        hits = find_runs(root)
        if not hits:
            raise UserError(f"{p}: no run directories (with stats.jsonl) found")
        for path, label in hits:
            found.setdefault(path, label)
    out = []
    for path, label in found.items():
        run = load_run(path)
        if "/" in label:  # cmp/gpt2ish under runs/ keeps its folder (two batches' runs stay apart)
            run.name = label
        out.append(run)
    return Runs(out)


def experiments(load_plugins: bool | None = None, check: bool = False) -> Table:
    """The registered experiments (built-ins and plugins) as a Table."""
    from lminspect.experiments.registry import list_experiments

    rows = [{"name": e.name, "summary": e.summary, "dist": e.dist, "version": e.version, "builtin": e.builtin,
             "error": e.error or ""} for e in list_experiments(load_plugins=load_plugins, check=check)]
    return Table(rows, title=f"{len(rows)} experiments")


def activations(path: str | Path, **kw: Any) -> Any:
    """Load a saved activation-statistics folder (``lminspect activations ... --out DIR``)."""
    from lminspect.activations import load

    return load(path, **kw)
