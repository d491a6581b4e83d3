"""``lminspect data ...``: build evaluation data from text (see lminspect/cli/__init__.py for the conventions)."""

from __future__ import annotations

from pathlib import Path

import typer

from lminspect.cli.threads import Threads

data_app = typer.Typer(
    name="data",
    help="Build evaluation data sets from text corpora.",
    no_args_is_help=True,
)


@data_app.command("make-mc")
def make_mc(
    corpus: str = typer.Argument(
        ...,
        help="'builtin' (the shipped public-domain corpus), a .txt (documents separated by two blank lines), "
        "a folder of .txt files, a .jsonl/.parquet with a text field, or a HF dataset id.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="File (.jsonl, HellaSwag format: ctx, endings, label)."),
    n: int = typer.Option(200, "--n", help="Number of items."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same corpus + seed = same file)."),
    ctx_sentences: int = typer.Option(3, "--ctx-sentences", help="Sentences of context per item."),
    choices: int = typer.Option(4, "--choices", help="Endings per item (1 true + distractors)."),
    field: str = typer.Option("text", "--text-field", help="Text field for .jsonl/.parquet/hub corpora."),
    field_opt: str = typer.Option(None, "--field", hidden=True),  # the old spelling
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output (only once the new "
                                                             "one is complete)."),
) -> None:
    """Make a multiple-choice test from text: some context, the true next sentence, and
    sentences of similar length from other documents as wrong answers.

    Example: lminspect data make-mc builtin --out cloze.jsonl
    """
    from lminspect.cli.aliases import renamed
    from lminspect.documents import read_documents
    from lminspect.evals.cloze import make_cloze, write_jsonl
    from lminspect.fsutil import check_output

    field = renamed(field, field_opt, "--field", "--text-field", "text")

    check_output(out, kind="file", overwrite=overwrite, inputs=(corpus,))
    from lminspect.validate import count

    count("--n", n)
    count("--ctx-sentences", ctx_sentences, maximum=1000)
    count("--choices", choices, minimum=2, maximum=100)
    docs = read_documents(corpus, field=field)
    rows = make_cloze(docs, n=n, seed=seed, ctx_sentences=ctx_sentences, n_choices=choices)
    write_jsonl(rows, out)
    typer.echo(f"wrote {len(rows)} items ({choices} choices, chance {1 / choices:.2f}) from {len(docs)} documents to {out}")


@data_app.command("metadata")
def metadata(
    data: str = typer.Argument(..., help="Data source as for `lminspect train --data`: 'builtin', a local "
                                         ".txt/.jsonl/.parquet file or directory, or a HF dataset id."),
    out: Path = typer.Option(..., "--out", "-o", help="File (.parquet, written atomically)."),
    model: str = typer.Option(None, "--model", "-m", help="Reference model (any model ref) for per-sample "
                                                          "perplexity; without it: no ppl column."),
    metric: list[str] = typer.Option(None, "--metric", help="Metric(s) to compute (default: all built-ins "
                                                            "and lminspect.metrics plugins)."),
    limit: int = typer.Option(None, "--limit", help="Only the first N documents."),
    field: str = typer.Option("text", "--text-field", help="Text field for .jsonl/.parquet/hub data."),
    field_opt: str = typer.Option(None, "--field", hidden=True),  # the old spelling
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output (only once the new "
                                                             "one is complete)."),
    threads: Threads = None,
) -> None:
    """Per-document metadata of a corpus (lengths, reference perplexity, plugin metrics), to train
    in that order (`lminspect train --order-by ppl --metadata FILE`) and plot `--saturation`.

    Example: lminspect data metadata builtin --model smollm2 --out meta.parquet
    """
    from lminspect.cli.aliases import renamed
    from lminspect.runtime import Progress, set_threads, threads_label

    field = renamed(field, field_opt, "--field", "--text-field", "text")
    n_threads = set_threads(threads)
    import time

    from lminspect.fsutil import check_output
    from lminspect.metadata.compute import compute_metadata, write_parquet

    check_output(out, kind="file", overwrite=overwrite, inputs=(data, model))
    from lminspect.validate import count
    from lminspect.validate import device as check_device

    count("--limit", limit)
    check_device(device)
    with Progress("metadata", limit, "documents") as prog:  # the corpus' length is known only at its end
        cols = compute_metadata(data, model, metrics=metric or None, limit=limit, text_field=field, device=device,
                                progress=prog.update)
    write_parquet(cols, out)
    extra = [c for c in cols if c not in ("id", "index", "split")]
    typer.echo(f"wrote {len(cols['id'])} samples to {out} (columns: {', '.join(extra)}; {threads_label(n_threads)}; "
               f"{time.perf_counter() - prog.t0:.1f} s)")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.add_typer(data_app, name="data", rich_help_panel="Data")
