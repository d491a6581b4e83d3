"""``lminspect activations`` (collect statistics), ``activations-show`` and ``activations-diff``.

Flat commands rather than a sub-app: ``activations MODEL ...`` takes a positional argument, which a
Typer group with subcommands would mistake for a subcommand name. See docs/activations.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from lminspect.cli.threads import Threads

PANEL = "Analysis"


def _console() -> Any:
    """stdout console; wide when piped (rich would otherwise squeeze tables into 80 columns)."""
    from rich.console import Console

    con = Console()
    return con if con.is_terminal else Console(width=200)


def activations(
    model: Annotated[str, typer.Argument(help="Model: a .gguf/.safetensors file, a HF dir, a fetched name (smollm2) or hf:ORG/NAME.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Folder for the statistics (resumed if it holds an unfinished run of the same model and settings).")],
    data: Annotated[str, typer.Option("--data", "-d", help="'builtin' (shipped corpus), a .txt/.jsonl/.parquet file or dir, or a HF dataset id[:config].")] = "builtin",
    tokens: Annotated[int, typer.Option("--tokens", help="Tokens to run through the model.")] = 50_000,
    tokens_opt: Annotated[int | None, typer.Option("-n", hidden=True)] = None,  # -n is --max-new-tokens elsewhere
    sites: Annotated[str, typer.Option("--sites", "-s", help="Comma list of resid (=resid_out), resid_in, resid_out, attn_out, mlp_out, mlp_hidden, or KIND.POS.")] = "resid,attn_out,mlp_out,mlp_hidden",
    plan: Annotated[str | None, typer.Option("--plan", "-p", help="Layer plan (see `lminspect stitch`); positions are plan positions.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Sequences per forward.")] = 8,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per sequence (documents are cut into chunks of this).")] = 256,
    seq_len_opt: Annotated[int | None, typer.Option("-L", hidden=True)] = None,  # -L is --layers elsewhere
    keep_tokens: Annotated[bool, typer.Option("--keep-tokens", help="Also store every token's activations (np.memmap files under DIR/tokens).")] = False,
    keep_dtype: Annotated[str, typer.Option("--keep-dtype", help="float16 or float32 for --keep-tokens.")] = "float16",
    outlier_k: Annotated[float, typer.Option("--outlier-k", help="Outlier: |x| > K * std of the site.")] = 6.0,
    outlier_k_opt: Annotated[float | None, typer.Option("-k", hidden=True)] = None,  # -k is --top-k elsewhere
    text_field: Annotated[str, typer.Option("--text-field", help="Column holding the text (jsonl/parquet/HF data).")] = "text",
    split: Annotated[str, typer.Option("--split", help="Dataset split (HF datasets).")] = "train",
    dtype: Annotated[str, typer.Option("--dtype", help="float32 or bfloat16 (statistics are float64 regardless).")] = "float32",
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace statistics of another model / other settings in --out.")] = False,
    save_every: Annotated[float, typer.Option("--save-every", help="Seconds between resumable snapshots (0: after every batch).")] = 30.0,
    max_batches: Annotated[int | None, typer.Option("--max-batches", hidden=True, help="Stop after this many batches (testing resume).")] = None,
    threads: Threads = None,
) -> None:
    """Collect activation statistics over many tokens (mean, spread, outliers, dead neurons).

    Mean, variance, skew, kurtosis, min/max, histograms, outlier ("massive activation") dimensions
    with example tokens, and MLP neuron firing frequency / dead neurons; per site and plan position.
    Interrupt any time: rerunning the same command resumes from the last snapshot.

    Example: lminspect activations smollm2 --tokens 50000 --out acts/

    Several processes share the batches and rank 0 merges and writes the same statistics:

        torchrun --standalone --nproc_per_node 2 -m lminspect activations smollm2 --out acts/

    Several machines (--out on rank 0's machine): run on each torchrun --nnodes 2 --node_rank
    {0|1} --nproc_per_node 2 --rdzv_backend c10d --rdzv_endpoint HOST:29500 -m lminspect
    activations ...
    """
    import contextlib

    from lminspect.cli.aliases import renamed
    from lminspect.runtime import NOTHING_WRITTEN, interrupted, set_threads, threads_label

    tokens = renamed(tokens, tokens_opt, "-n", "--tokens", 50_000)
    seq_len = renamed(seq_len, seq_len_opt, "-L", "--seq-len", 256)
    outlier_k = renamed(outlier_k, outlier_k_opt, "-k", "--outlier-k", 6.0)
    n_threads = set_threads(threads)
    from rich.console import Console

    from lminspect.activations import collect
    from lminspect.activations.collect import remove_leftovers
    from lminspect.distributed import join, on_main
    from lminspect.fsutil import check_not_input
    from lminspect.runlock import run_dir_lock

    check_not_input(out, model, data, plan, option="--out")  # --out MODEL would lose the model
    if not overwrite and not _typed("tokens", "tokens_opt"):
        _refuse_silent_extension(out, tokens)
    from lminspect.runtime import nice_count

    def quick(seconds: float) -> str:
        return f"--tokens {nice_count(tokens * 60 / seconds)} for a quick look"
    rank, world, _ = join(device)  # under torchrun: only rank 0 locks, reads and writes --out
    saved = (lambda: _snapshot_note(out)) if rank == 0 else (lambda: NOTHING_WRITTEN)
    with interrupted(saved), contextlib.ExitStack() as owned:
        def own() -> None:
            owned.enter_context(run_dir_lock(out, option="--out"))  # one run per results dir
            remove_leftovers(Path(out))

        on_main(own, rank, world)
        stats = collect(model, out, data=data, tokens=tokens, sites=sites.split(","), plan=plan,
                        batch_size=batch_size, seq_len=seq_len, keep_tokens=keep_tokens, keep_dtype=keep_dtype,
                        outlier_k=outlier_k, text_field=text_field, split=split, dtype=dtype, device=device,
                        overwrite=overwrite, save_every=save_every, max_batches=max_batches, quick=quick)
    if stats is None:  # another rank than 0 under torchrun
        return
    err = Console(stderr=True, highlight=False)
    el = float(stats.progress.get("elapsed_s", 0.0))
    rate = f", {stats.tokens / el:,.0f} tok/s" if el > 0 else ""
    state = "complete" if stats.complete else "partial (rerun to resume)"
    procs = f", {world} processes" if world > 1 else ""
    err.print(f"{stats.tokens} tokens, {stats.batches} batches, {len(stats)} sites{procs}{rate}, "
              f"{threads_label(n_threads)}: {state} -> {out}", markup=False)


def _typed(*params: str) -> bool:
    """Whether the user typed one of these parameters (not left at its default)."""
    try:  # recent typer ships its own copy of click
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - a typer that uses click itself
        from click import get_current_context

    ctx = get_current_context(silent=True)
    if ctx is None:
        return True
    return any(getattr(ctx.get_parameter_source(p), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")
               for p in params)


def _refuse_silent_extension(out: str, tokens: int) -> None:
    """A finished collection is extended only when asked: the default --tokens must not quietly
    turn a 5,000-token run into minutes more of work."""
    from lminspect.activations.store import read_index
    from lminspect.errors import UserError

    try:
        index = read_index(Path(out)) if Path(out).is_dir() else None
    except UserError:
        return  # the collection itself says what is wrong with it
    prog = (index or {}).get("progress") or {}
    done = int(prog.get("tokens_done") or 0)
    if prog.get("complete") and not prog.get("exhausted") and 0 < done < tokens:
        raise UserError(f"--out {out} holds a finished collection of {done:,} tokens; continuing it to the default "
                        f"{tokens:,} takes more time: give --tokens {tokens} to continue, or another --out")


def _snapshot_note(out: str) -> str:
    """What an interrupted collection left in ``out``: its last snapshot (resumable), or nothing."""
    from lminspect.activations import load

    try:
        stats = load(out)
    except Exception:  # noqa: BLE001 - no snapshot yet (or one of another run): say nothing was saved here
        return "no snapshot was saved yet; nothing written"
    return (f"snapshot of {stats.tokens} tokens saved in {out}; run the same command again to resume")


def show(
    results: Annotated[str, typer.Argument(help="Results directory of `lminspect activations`.")],
    kind: Annotated[str | None, typer.Option("--kind", help="Only this site kind (resid_out, mlp_hidden, ...).")] = None,
    examples: Annotated[int, typer.Option("--examples", help="Outlier dims to list with example tokens per site.")] = 0,
    save: Annotated[Path | None, typer.Option("--save", help="Also save std, |x| max and kurtosis by plan position "
                                              "as a PNG or SVG figure (needs the \\[figures] extra).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --save file.")] = False,
) -> None:
    """Summarise collected activation statistics: one row per site (std, |x| max, kurtosis, outliers, dead).

    Example: lminspect activations-show acts/ --kind resid_out --save acts.png
    """
    from rich.table import Table

    from lminspect.activations import load
    from lminspect.errors import UserError

    if save is not None:
        from lminspect.figures import check_figure_path

        check_figure_path(save, overwrite, (results,))
    stats = load(results)
    rows = [s for s in stats if kind is None or s.kind == kind]
    if not rows:
        raise UserError(f"{results}: no sites of kind {kind!r} (have {', '.join(stats.kinds)})")
    title = f"{stats.model} plan={stats.plan} tokens={stats.tokens}" + ("" if stats.complete else " (partial)")
    from rich.markup import escape

    t = Table(title=escape(title))
    for col in ("site", "layer", "dim", "std", "|x| max", "kurt med", "kurt max", "outlier dims", "top outliers",
                "dead"):
        t.add_column(col, justify="left" if col in ("site", "top outliers") else "right")
    for s in rows:
        r = s.summary()
        top = " ".join(f"{d}:{int(s.outlier_counts[d])}" for d in s.outlier_dims[:4])
        t.add_row(escape(s.name), str(s.layer), str(s.dim), f"{r['std']:.4g}", f"{r['absmax']:.4g}",
                  f"{r['kurtosis_median']:.3g}", f"{r['kurtosis_max']:.3g}", str(r["outlier_dims"]), top,
                  str(r.get("dead", "")))
    con = _console()
    con.print(t)
    if examples > 0:
        for s in rows:
            for d in s.outlier_dims[:examples]:
                ex = ", ".join(f"doc {doc} tok {off} |x|={v:.4g}" for doc, off, v in s.examples(int(d)))
                con.print(f"{s.name} dim {int(d)} ({int(s.outlier_counts[d])} outliers): {ex}", markup=False)
    if save is not None:
        _save_profile(save, rows, title, overwrite)


def _save_profile(path: Path, rows: list[Any], title: str, overwrite: bool) -> None:
    """The table's std, |x| max and kurtosis max over plan positions, one line per site kind."""
    from lminspect.figures import save_panels

    panels = []
    for key, name in (("std", "std"), ("absmax", "|x| max"), ("kurtosis_max", "kurtosis max")):
        series: dict[str, tuple[list[float], list[float]]] = {}
        for s in rows:
            xs, ys = series.setdefault(s.kind, ([], []))
            xs.append(float(s.pos))
            ys.append(float(s.summary()[key]))
        panels.append((f"{name}: {title}" if not panels else name, series))
    save_panels(path, panels, xlabel="plan position", overwrite=overwrite)
    print(f"saved {path}", file=sys.stderr)


def diff(
    a: Annotated[str, typer.Argument(help="Results directory A (e.g. the stitched model).")],
    b: Annotated[str, typer.Argument(help="Results directory B (e.g. the baseline).")],
    kind: Annotated[str | None, typer.Option("--kind", help="Only this site kind.")] = None,
    threads: Threads = None,
) -> None:
    """Compare two activation collections site by site: mean shift, variance ratio, kurtosis change.

    A warning line says when the two were collected on different token counts, data or
    sequence lengths; with two different plans the sites pair plan positions (the header says so).

    Example: lminspect activations-diff acts/stitched acts/base --kind resid_out
    """
    from lminspect.runtime import run_summary, set_threads

    n_threads = set_threads(threads)
    from lminspect.activations import diff as diff_stats
    from lminspect.activations import diff_table, load
    from lminspect.activations.diff import diff_warnings, matched_by_position
    from lminspect.errors import UserError

    sa, sb = load(a), load(b)
    rows = diff_stats(sa, sb)
    for line in diff_warnings(sa, sb):
        print(f"lminspect: warning: {line}", file=sys.stderr)
    if kind is not None:
        rows = [r for r in rows if r["kind"] == kind]
        if not rows:
            raise UserError(f"no common sites of kind {kind!r}")
    from rich.markup import escape

    _console().print(diff_table(rows, title=escape(f"A={a} ({sa.plan})  vs  B={b} ({sb.plan})"),
                                by_position=matched_by_position(sa, sb)))
    print(run_summary(f"activations-diff of {len(rows)} sites", n_threads), file=sys.stderr)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("activations", rich_help_panel=PANEL)(activations)
    app.command("activations-show", rich_help_panel=PANEL)(show)
    app.command("activations-diff", rich_help_panel=PANEL)(diff)
