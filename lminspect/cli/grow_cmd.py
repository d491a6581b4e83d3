"""``lminspect grow``: grow a model (depth, width, heads, ffn, vocab) without changing its function.

Only typer at module level; torch loads inside the command (see lminspect/cli/__init__.py).
"""

from __future__ import annotations

from pathlib import Path

import typer

from lminspect.cli.threads import Threads


def grow(
    checkpoint: str = typer.Argument(..., help="A training checkpoint dir, a run dir (its latest "
                                                "checkpoint) or any HF model dir the engine loads."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder: the grown model (written atomically)."),
    layers: str = typer.Option(None, "--layers", "-L", help="+N inserts N identity blocks; N grows to N blocks."),
    at: int = typer.Option(None, "--at", help="Insert the new blocks before this layer (default: the end)."),
    width: int = typer.Option(None, "--width", help="New residual width (hidden size)."),
    ffn: int = typer.Option(None, "--ffn", help="New MLP hidden width."),
    heads: int = typer.Option(None, "--heads", help="New number of query heads (head_dim stays fixed; "
                                                    "default grows with --width)."),
    kv_heads: int = typer.Option(None, "--kv-heads", help="llama: new number of kv heads "
                                                          "(default keeps the q/kv ratio)."),
    vocab: int = typer.Option(None, "--vocab", help="New vocabulary size (rows appended)."),
    vocab_init: str = typer.Option("mean", "--vocab-init", help="New token rows: mean (logit = mean logit, "
                                                                "never the argmax) or zero."),
    seed: int = typer.Option(0, "--seed", help="Seed for the random parts (new read weights)."),
    check: bool = typer.Option(True, "--check/--no-check", help="Verify max |logit diff| on a probe."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output (only once the new "
                                                             "one is complete)."),
    threads: Threads = None,
) -> None:
    """Make a model deeper or wider while it computes the same logits, to keep training it bigger.

    New blocks are identity (zero attn.o / mlp.down), new heads and hidden units write nothing,
    width growth keeps the norms exact (docs/growth.md). The result is a model directory that
    `lminspect.open` and the engine load, and that `lminspect train --init-from` continues training.

    Example: lminspect grow runs/base --layers +2 --width 512 --out grown/
    """
    from lminspect.runtime import run_summary, set_threads

    n_threads = set_threads(threads)
    import sys
    import time

    import torch

    from lminspect.errors import UserError
    from lminspect.fsutil import check_output
    from lminspect.grow.core import GrowSpec, parse_layers
    from lminspect.grow.io import grow_dir, load_for_growth

    if all(v is None for v in (layers, width, ffn, heads, kv_heads, vocab)):
        raise UserError("nothing to grow: give --layers, --width, --ffn, --heads, --kv-heads or --vocab")
    check_output(out, kind="dir", overwrite=overwrite, inputs=(checkpoint,))
    model, _ = load_for_growth(checkpoint)
    spec = GrowSpec(layers=parse_layers(layers, model.config.n_layer), at=at, width=width, ffn=ffn,
                    heads=heads, kv_heads=kv_heads, vocab=vocab, vocab_init=vocab_init)
    t0 = time.perf_counter()
    old, new, path = grow_dir(checkpoint, out, spec, seed=seed)
    msg = ""
    if check:
        g = torch.Generator().manual_seed(0)
        T = min(32, old.context_length)
        ids = torch.randint(0, old.vocab_size, (1, T), generator=g)
        with torch.inference_mode():
            diff = (new(ids)[..., :old.vocab_size] - old(ids)).abs().max().item()
        msg = f"; max |logit diff| {diff:.2e} on a random probe"
    n_old = sum(p.numel() for p in old.parameters())
    n_new = sum(p.numel() for p in new.parameters())
    c0, c1 = old.config, new.config
    typer.echo(f"wrote {path}: {old.arch} layers {c0.n_layer}->{c1.n_layer}, width {c0.dim}->{c1.dim}, "
               f"heads {c0.n_head}->{c1.n_head}, ffn {c0.ffn_dim}->{c1.ffn_dim}, vocab {c0.vocab_size}->"
               f"{c1.vocab_size}, params {n_old:,}->{n_new:,}{msg}")
    print(run_summary("grown", n_threads, t0), file=sys.stderr)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("grow", rich_help_panel="Training")(grow)
