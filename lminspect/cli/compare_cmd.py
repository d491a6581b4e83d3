"""``lminspect diff A B`` (two models tensor by tensor) and ``lminspect timeline RUN`` (a run's
checkpoints). The numbers live in ``lminspect/compare/``; see docs/compare.md."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

PANEL = "Compare"

_REF_HELP = ("A model (file, HF dir, fetched name, hf:ORG/NAME), a checkpoint dir, or a run dir "
             "(its newest checkpoint; RUN@STEP, RUN@first for others).")


def _fmt(v: Any, spec: str = "{:.3g}") -> str:
    return "-" if v is None else spec.format(v)


def diff(
    a: Annotated[str, typer.Argument(help=_REF_HELP, show_default=False)],
    b: Annotated[str, typer.Argument(help="The model to compare with A (same kinds of reference).",
                                     show_default=False)],
    tensor: Annotated[list[str] | None, typer.Option(
        "--tensor", "-t", help="Only tensors matching this glob (canonical names); repeatable.")] = None,
    by_layer: Annotated[str | None, typer.Option(
        "--by-layer", metavar="STAT", help="One column (rel_change, cosine, max_abs_diff, subspace_overlap, "
        "top_cos, d_std, d_kurtosis, d_stable_rank, d_alpha) as a layers x components table and plot.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines: one object per tensor, then a summary.")] = False,
    svd: Annotated[bool, typer.Option("--svd/--no-svd", help="Singular directions and spectral statistics "
                                      "(stable rank, alpha) of matrices; --no-svd is quicker.")] = True,
    changed: Annotated[bool, typer.Option("--changed", help="Only tensors that differ (rel_change > 0).")] = False,
) -> None:
    """Compare two models tensor by tensor: how much and in which directions the weights moved.

    Tensors are matched by canonical name; where a model was grown, the overlapping block is
    compared (the `match` column says so) and tensors only in one model are listed. Per tensor:
    rel_change ||B-A||/||A||, cosine, max |B-A|, the overlap of the top singular subspaces, and
    the change of std, kurtosis, stable rank and alpha. Streamed one pair of tensors at a time
    and cached, so the second run is instant.

    Example: lminspect diff runs/base@first runs/base --by-layer rel_change
    """
    import fnmatch
    import json

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from lminspect.compare.checkpoints import open_ref
    from lminspect.compare.diff import diff_models, match_tensors, overall
    from lminspect.errors import UserError

    sa, sb = open_ref(a), open_ref(b)
    m = match_tensors(sa, sb)
    if not m.pairs:
        raise UserError(f"{a} and {b} share no tensor names (is one of them a different architecture?)")
    names = [p.name for p in m.pairs]
    if tensor:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, g) or fnmatch.fnmatchcase(n.removesuffix(".weight"), g)
                                         for g in tensor)]
        if not names:
            raise UserError(f"no tensor of both models matches {', '.join(tensor)}")
    err = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=not err.is_terminal) as prog:
        task = prog.add_task("diff", total=len(names))
        rows, _ = diff_models(sa, sb, names=names, directions=svd,
                              progress=lambda i, n, name: prog.update(task, completed=i, description=name))
    if changed:
        rows = [r for r in rows if r.get("rel_change") != 0.0]
    summary = {"a": a, "b": b, **overall(rows), "only_a": m.only_a, "only_b": m.only_b,
               "overlap": [r["name"] for r in rows if r["match"].startswith("overlap")]}
    if as_json:
        for r in rows:
            sys.stdout.write(json.dumps(r) + "\n")
        sys.stdout.write(json.dumps({"summary": summary}) + "\n")
        return
    if by_layer:
        from lminspect.cli.weights_cmd import _print_by_layer

        _print_by_layer(f"{sa.name} -> {sb.name}", rows, by_layer)
    else:
        _print_table(sa.name, sb.name, rows, svd)
    _print_summary(summary)


def _print_table(name_a: str, name_b: str, rows: list[dict], svd: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console()
    if not out.is_terminal:
        out = Console(width=200)
    t = Table(title=f"{name_a} -> {name_b}: weight differences")
    cols = ["tensor", "shape", "rel_change", "cosine", "max|diff|"]
    cols += ["top-8 overlap", "top cos"] if svd else []
    cols += ["d std", "d kurt"] + (["d stable r", "d alpha"] if svd else [])
    for c in cols:
        t.add_column(c, justify="left" if c in ("tensor", "shape") else "right")
    for r in rows:
        shape = "x".join(map(str, r["shape"])) + ("*" if r["match"].startswith("overlap") else "")
        cells = [r["name"], shape, _fmt(r.get("rel_change")), _fmt(r.get("cosine"), "{:.6f}"),
                 _fmt(r.get("max_abs_diff"))]
        if svd:
            cells += [_fmt(r.get("subspace_overlap"), "{:.3f}"), _fmt(r.get("top_cos"), "{:.3f}")]
        cells += [_fmt(r.get("d_std"), "{:+.3g}"), _fmt(r.get("d_kurtosis"), "{:+.3g}")]
        if svd:
            cells += [_fmt(r.get("d_stable_rank"), "{:+.3g}"), _fmt(r.get("d_alpha"), "{:+.3g}")]
        t.add_row(*cells)
    if any(r["match"].startswith("overlap") for r in rows):
        t.caption = "* shapes differ (a grown model): the overlapping leading block is compared"
    out.print(t)


def _print_summary(s: dict) -> None:
    lines = [f"{s['tensors']} tensors compared: overall rel_change {_fmt(s['rel_change'])}, "
             f"cosine {_fmt(s['cosine'], '{:.6f}')}"]
    if s["overlap"]:
        lines.append(f"{len(s['overlap'])} compared on their overlapping block (shapes differ): "
                     + ", ".join(s["overlap"][:6]) + (" ..." if len(s["overlap"]) > 6 else ""))
    for side, key in (("A", "only_a"), ("B", "only_b")):
        if s[key]:
            lines.append(f"only in {side} ({s[side.lower()]}): {len(s[key])}: " + ", ".join(s[key][:8])
                         + (" ..." if len(s[key]) > 8 else ""))
    sys.stdout.write("\n".join(lines) + "\n")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    for fn in (diff,):
        app.command(rich_help_panel=PANEL)(fn)
