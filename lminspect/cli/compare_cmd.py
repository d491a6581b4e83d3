"""``lminspect diff A B`` (two models tensor by tensor) and ``lminspect timeline RUN`` (a run's
checkpoints). The numbers live in ``lminspect/compare/``; see docs/compare.md."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from lminspect.cli.threads import Threads

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
        "--tensor", "-t", help="Only tensors matching this glob (canonical names, .weight optional); repeatable.")] = None,
    by_layer: Annotated[str | None, typer.Option(
        "--by-layer", metavar="STAT", help="One column (rel_change, cosine, max_abs_diff, subspace_overlap, "
        "top_cos, d_std, d_kurtosis, d_stable_rank, d_alpha) as a layers x components table and plot.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines: one object per tensor, then a summary.")] = False,
    svd: Annotated[bool, typer.Option("--svd/--no-svd", help="Singular directions and spectral statistics "
                                      "(stable rank, alpha) of matrices; --no-svd is quicker.")] = True,
    changed: Annotated[bool, typer.Option("--changed", help="Only tensors that differ (rel_change > 0).")] = False,
    save: Annotated[Path | None, typer.Option("--save", help="With --by-layer: also save the plot as PNG or SVG "
                                              "(needs the \\[figures] extra).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --save file.")] = False,
    threads: Threads = None,
) -> None:
    """Compare two models tensor by tensor: how much and in which directions the weights moved.

    Tensors are matched by canonical name; where a model was grown, the overlapping block is
    compared (the `match` column says so) and tensors only in one model are listed. Per tensor:
    rel_change ||B-A||/||A||, cosine, max |B-A|, the overlap of the top singular subspaces, and
    the change of std, kurtosis, stable rank and alpha. Streamed one pair of tensors at a time
    and cached, so the second run is instant.

    Example: lminspect diff runs/base@first runs/base --by-layer rel_change
    """
    from lminspect.runtime import set_threads

    n_threads = set_threads(threads)
    import json

    from lminspect.compare.checkpoints import open_ref
    from lminspect.compare.diff import diff_models, match_tensors, overall
    from lminspect.errors import UserError
    from lminspect.weights.naming import glob_matches

    if save is not None:
        if not by_layer:
            raise UserError("--save draws the --by-layer figure: add --by-layer STAT")
        from lminspect.figures import check_figure_path

        check_figure_path(save, overwrite, (a, b))
    sa, sb = open_ref(a), open_ref(b)
    m = match_tensors(sa, sb)
    if not m.pairs:
        raise UserError(f"{a} and {b} share no tensor names (is one of them a different architecture?)")
    names = [p.name for p in m.pairs]
    if tensor:
        names = [n for n in names if glob_matches(tensor, n)]
        if not names:
            raise UserError(f"no tensor of both models matches {', '.join(tensor)}")
    with _progress("diff", len(names), "tensor pairs") as prog:
        rows, _ = diff_models(sa, sb, names=names, directions=svd,
                              progress=lambda i, n, name: prog.update(i, n, info=name))
        prog.update(prog.total, info="")
    if changed:
        rows = [r for r in rows if r.get("rel_change") != 0.0]
    summary = {"a": a, "b": b, **overall(rows), "only_a": m.only_a, "only_b": m.only_b,
               "overlap": [r["name"] for r in rows if r["match"].startswith("overlap")]}
    if as_json:
        for r in rows:
            sys.stdout.write(json.dumps(r) + "\n")
        sys.stdout.write(json.dumps({"summary": summary}) + "\n")
    elif by_layer:
        from lminspect.cli.weights_cmd import _print_by_layer

        _print_by_layer(f"{sa.name} -> {sb.name}", rows, by_layer, save, overwrite)
        _print_summary(summary)
    else:
        _print_table(sa.name, sb.name, rows, svd)
        _print_summary(summary)
    from lminspect.runtime import run_summary

    sys.stderr.write(run_summary(f"diff of {len(names)} tensor pairs", n_threads, prog.t0) + "\n")


def _print_table(name_a: str, name_b: str, rows: list[dict], svd: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console()
    if not out.is_terminal:
        out = Console(width=200)
    from rich.markup import escape

    t = Table(title=escape(f"{name_a} -> {name_b}: weight differences"))
    cols = ["tensor", "shape", "rel_change", "cosine", "max|diff|"]
    cols += ["top-8 overlap", "top cos"] if svd else []
    cols += ["d std", "d kurt"] + (["d stable r", "d alpha"] if svd else [])
    for c in cols:
        t.add_column(c, justify="left" if c in ("tensor", "shape") else "right")
    for r in rows:
        shape = "x".join(map(str, r["shape"])) + ("*" if r["match"].startswith("overlap") else "")
        cells = [escape(r["name"]), shape, _fmt(r.get("rel_change")), _fmt(r.get("cosine"), "{:.6f}"),
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


def timeline(
    run_dir: Annotated[str, typer.Argument(help="A training run directory (with checkpoints/).",
                                           show_default=False)],
    stat: Annotated[str, typer.Option("--stat", help="Weight statistic: alpha, stable_rank, "
                                      "effective_rank, spectral_norm, std, rms, kurtosis, absmax, ...")] = "alpha",
    stat_opt: Annotated[str | None, typer.Option("-s", hidden=True)] = None,  # -s is --sites elsewhere
    every: Annotated[int, typer.Option("--every", help="Every K-th checkpoint (the newest always).")] = 1,
    every_opt: Annotated[int | None, typer.Option("-k", hidden=True)] = None,  # -k is --top-k elsewhere
    layer: Annotated[int | None, typer.Option("--layer", "-l", help="One layer's values instead of the mean "
                                              "over layers; with --attention the layer shown (default: last).")] = None,
    tensor: Annotated[list[str] | None, typer.Option("--tensor", "-t", help="One column per tensor matching "
                                                     "this glob (e.g. embed.tokens); repeatable.")] = None,
    x: Annotated[str, typer.Option("--x", help="Plot against steps or tokens.")] = "steps",
    embeddings: Annotated[bool, typer.Option("--embeddings", help="Token embeddings of every checkpoint in one "
                                             "PCA plane instead of a statistic.")] = False,
    tokens: Annotated[str | None, typer.Option("--token-labels", help="Comma list of tokens to label and trace "
                                               "with --embeddings (default: the 6 that moved most). Read as lens "
                                               "--target is: a bare word means the word after a space (the -> "
                                               "' the'); quote to keep exact text ('\"the\"').")] = None,
    tokens_opt: Annotated[str | None, typer.Option("--tokens", hidden=True)] = None,  # --tokens is a count elsewhere
    fit: Annotated[str, typer.Option("--fit", help="PCA fitted on the last checkpoint or jointly on all.")] = "last",
    attention: Annotated[str | None, typer.Option("--attention", metavar="PROMPT", help="Attention maps of this "
                                                  "prompt, per head, across checkpoints (small multiples).")] = None,
    head: Annotated[list[int] | None, typer.Option("--head", help="Only this head with --attention; "
                                                   "repeatable.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the numbers as JSON instead.")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also save the data (JSON / .npy) and the "
                                             "text figure in this folder.")] = None,
    save: Annotated[Path | None, typer.Option("--save", help="Also save the figure as PNG or SVG (needs the "
                                              "\\[figures] extra).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier --out folder or --save "
                                            "file.")] = False,
    threads: Threads = None,
) -> None:
    """Follow a training run across its checkpoints: a weight statistic per component (mean over
    layers, or --layer N, or --tensor GLOB) as a table and a plot against steps or tokens;
    --embeddings for the token embeddings in one PCA plane; --attention PROMPT for attention
    maps per head. Statistics are cached per checkpoint; one checkpoint is loaded at a time.

    Keep more than the default 2 checkpoints with `lminspect train --keep-checkpoints 0`.

    Example: lminspect timeline runs/base --stat stable_rank --every 2
    """
    from lminspect.cli.aliases import renamed
    from lminspect.runtime import set_threads

    stat = renamed(stat, stat_opt, "-s", "--stat", "alpha")
    every = renamed(every, every_opt, "-k", "--every", 1)
    tokens = renamed(tokens, tokens_opt, "--tokens", "--token-labels")
    n_threads = set_threads(threads)
    from lminspect.compare.checkpoints import list_checkpoints
    from lminspect.compare.timeline import select_checkpoints
    from lminspect.errors import UserError

    if x not in ("steps", "tokens"):
        raise UserError(f"--x {x!r}: choose steps or tokens")
    cks = select_checkpoints(list_checkpoints(run_dir), every)
    if out is not None:
        from lminspect.fsutil import check_output

        check_output(out, kind="dir", overwrite=overwrite, inputs=(run_dir,))
    if save is not None:
        from lminspect.figures import check_figure_path

        check_figure_path(save, overwrite, (run_dir,))
    if embeddings:
        data, text = _embeddings_view(cks, tokens, fit)
    elif attention is not None:
        data, text = _attention_view(cks, attention, layer, head)
    else:
        data, text = _stats_view(run_dir, cks, stat, layer, tensor, x, as_json)
    if as_json:
        sys.stdout.write(_json(data) + "\n")
    if out is not None:
        _save(out, data, text)
    if save is not None:
        data["_figure"](save, overwrite)
        sys.stderr.write(f"saved {save}\n")
    from lminspect.runtime import run_summary

    sys.stderr.write(run_summary(f"timeline of {len(cks)} checkpoints", n_threads) + "\n")


def _progress(what: str, total: int, unit: str) -> Any:
    """Progress over tensors or checkpoints (``runtime.Progress``: a bar, or plain lines in a log)."""
    from lminspect.runtime import Progress

    return Progress(what, total, unit)


def _stats_view(run_dir: str, cks: list, stat: str, layer: int | None, tensor: list[str] | None, x: str,
                as_json: bool) -> tuple[dict, str]:
    from rich.console import Console
    from rich.table import Table

    from lminspect.compare.timeline import stat_records, timeline_columns, timeline_figure

    with _progress(f"timeline {stat}", len(cks), "checkpoints") as prog:
        records = stat_records(cks, stat, tensors=tensor, progress=lambda i, n, d: prog.update(i, n, info=d))
        prog.update(prog.total, info="")
    steps, toks, cols = timeline_columns(records, layer=layer, per_tensor=bool(tensor))
    where = "per tensor" if tensor else (f"layer {layer}" if layer is not None else "mean over layers")
    title = f"{Path(run_dir).name}: {stat} across {len(steps)} checkpoints ({where})"
    xs = steps if x == "steps" or any(t is None for t in toks) else toks
    fig = timeline_figure(xs, cols, stat, xlabel="tokens" if xs is toks else "step", title=title)
    data = {"run": run_dir, "stat": stat, "view": where, "steps": steps, "tokens": toks, "columns": cols,
            "records": records}
    xlabel = "tokens" if xs is toks else "step"

    def figure(path: Path, overwrite: bool) -> None:
        from lminspect.figures import save_lines

        save_lines(path, {c: (xs, v) for c, v in cols.items()}, title=title, xlabel=xlabel, ylabel=stat,
                   overwrite=overwrite)

    data["_figure"] = figure
    if as_json:
        return data, fig
    from rich.markup import escape

    table = Table(title=escape(title))
    for c in ("step", "tokens", *cols):
        table.add_column(escape(c), justify="right", overflow="fold")
    for k, s in enumerate(steps):
        table.add_row(str(s), "-" if toks[k] is None else f"{toks[k]:,}", *(_fmt(v[k]) for v in cols.values()))
    con = Console()
    if not con.is_terminal:
        con = Console(width=max(100, 24 + 11 * len(cols)))
    con.print(table)
    if len(steps) > 1:
        sys.stdout.write(fig + "\n")
    return data, fig


def _label_words(spec: str) -> list[str]:
    """``--token-labels 'the,and,"cat"'``, read as ``lens --target`` is (``readout.target_text``): a
    bare word is the word after a space (' the'); quoted text is kept exactly."""
    from lminspect.lens.readout import target_text

    return [target_text(w) for w in spec.split(",") if w.strip()]


def _embeddings_view(cks: list, tokens: str | None, fit: str) -> tuple[dict, str]:
    from lminspect.compare.embeddings import embedding_figure, labelled_pca

    words = _label_words(tokens) if tokens else []
    pca, labelled = labelled_pca(cks, words, fit)
    labelled = [(w.strip() or repr(w), i) for w, i in labelled]  # ' the' is labelled the
    fig = embedding_figure(pca, labelled)
    sys.stdout.write(fig + "\n")
    data = {"steps": pca.steps, "tokens_seen": pca.tokens_seen, "fit": pca.fit, "explained": pca.explained,
            "labels": [w for w, _ in labelled], "ids": [i for _, i in labelled],
            "paths": [pca.proj[:, i, :].tolist() for _, i in labelled], "_npy": {"embeddings_pca.npy": pca.proj}}

    def figure(path: Path, overwrite: bool) -> None:
        from lminspect.figures import save_paths

        last = pca.proj[-1]
        paths = {w: (pca.proj[:, i, 0].tolist(), pca.proj[:, i, 1].tolist()) for w, i in labelled}
        ev = ", ".join(f"{e:.0%}" for e in pca.explained)
        save_paths(path, (last[:, 0].tolist(), last[:, 1].tolist()), paths, overwrite=overwrite,
                   title=f"token embeddings, PCA ({pca.fit} fit; {ev}), steps {pca.steps[0]}-{pca.steps[-1]}",
                   xlabel="PC1", ylabel="PC2")

    data["_figure"] = figure
    return data, fig


def _attention_view(cks: list, prompt: str, layer: int | None, head: list[int] | None) -> tuple[dict, str]:
    from lminspect.compare.attention import attention_across, attention_summary, small_multiples

    with _progress("timeline attention", len(cks), "checkpoints") as prog:
        probs, labels = attention_across(cks, prompt, progress=lambda i, n, d: prog.update(i, n, info=d))
        prog.update(prog.total, info="")
    steps = [c.step for c in cks]
    lay = probs.shape[1] - 1 if layer is None else layer
    text = small_multiples(probs, steps, lay, heads=head)
    sys.stdout.write("tokens: " + " ".join(labels) + "\n" + text)
    data = {"steps": steps, "prompt": prompt, "tokens": labels, "layer": lay, **attention_summary(probs),
            "_npy": {"attention.npy": probs}}
    heads = head or list(range(probs.shape[2]))

    def figure(path: Path, overwrite: bool) -> None:
        from lminspect.figures import save_heatmap_grid

        save_heatmap_grid(path, probs[:, lay][:, heads], row_labels=[f"step {s}" for s in steps],
                          col_labels=[f"head {h}" for h in heads], overwrite=overwrite,
                          title=f"attention, layer {lay}: {prompt!r}")

    data["_figure"] = figure
    return data, text


def _json(data: dict) -> str:
    import json

    return json.dumps({k: v for k, v in data.items() if not k.startswith("_")})


def _save(out: Path, data: dict, text: str) -> None:
    """timeline.json, figure.txt and any arrays, written as one folder (complete or absent)."""
    import numpy as np

    from lminspect.fsutil import atomic_dir

    with atomic_dir(out) as tmp:
        (tmp / "timeline.json").write_text(_json(data) + "\n", encoding="utf-8")
        (tmp / "figure.txt").write_text(text + "\n", encoding="utf-8")
        for name, arr in data.get("_npy", {}).items():
            np.save(tmp / name, arr)
    sys.stderr.write(f"saved {out}/ (timeline.json, figure.txt{''.join(', ' + n for n in data.get('_npy', {}))})\n")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    for fn in (diff, timeline):
        app.command(rich_help_panel=PANEL)(fn)
