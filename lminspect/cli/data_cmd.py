"""``lminspect data ...``: build evaluation data from text (see lminspect/cli/__init__.py for the conventions)."""

from __future__ import annotations

from pathlib import Path

import typer

from lminspect.cli.stitch_cmd import cli_errors

data_app = typer.Typer(
    name="data",
    help="Build evaluation data sets from text corpora.",
    no_args_is_help=True,
)


@data_app.command("make-mc")
@cli_errors
def make_mc(
    corpus: str = typer.Argument(
        ...,
        help="'builtin' (the shipped public-domain corpus), a .txt (documents separated by two blank lines), "
        "a folder of .txt files, a .jsonl/.parquet with a text field, or a HF dataset id.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output .jsonl (HellaSwag format: ctx, endings, label)."),
    n: int = typer.Option(200, "--n", help="Number of items."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same corpus + seed = same file)."),
    ctx_sentences: int = typer.Option(3, "--ctx-sentences", help="Sentences of context per item."),
    choices: int = typer.Option(4, "--choices", help="Endings per item (1 true + distractors)."),
    field: str = typer.Option("text", "--field", help="Text field for .jsonl/.parquet/hub corpora."),
) -> None:
    """Make a cloze multiple-choice set: a few sentences of context, the true next sentence,
    and distractor sentences (of similar length) from other documents. Written atomically."""
    from lminspect.evals.cloze import make_cloze, read_documents, write_jsonl

    docs = read_documents(corpus, field=field)
    rows = make_cloze(docs, n=n, seed=seed, ctx_sentences=ctx_sentences, n_choices=choices)
    write_jsonl(rows, out)
    typer.echo(f"wrote {len(rows)} items ({choices} choices, chance {1 / choices:.2f}) from {len(docs)} documents to {out}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.add_typer(data_app, name="data", rich_help_panel="Data")
