"""``lminspect lens``, ``lminspect dla``, ``lminspect patch``: look through the layers of any plan.

Thin commands over ``lminspect.lens``; rendering is ``lminspect.lens.render`` (shared with the
REPL and the TUI). Results can be written as JSON (all three) or CSV / NPZ (patch grids).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lminspect.cli.threads import Threads

MODEL_HELP = "Model: a HF directory, .safetensors, .gguf, or a fetched name such as 'smollm2'."
PLAN_HELP = "Layer plan (see `lminspect stitch show --help`): '0-23,27-29', '15r3', '7*heads[0,3]=0', a preset or a file."
TOKEN_HELP = ("Target token (its first token if it splits). A bare word means the word after a space (Paris -> "
              "' Paris'); quote it to keep the exact text ('\"Paris\"'), or give id:N.")
_OUT_SUFFIXES = {".json", ".csv", ".npz"}


def _open(model: str, dtype: str) -> tuple[Any, Any]:
    from lminspect.models.open import open_model

    _, lm, tok = open_model(model, dtype=dtype, weights="auto")  # a 7B bf16 / GGUF stays as stored
    return lm, tok


def _plan(lm: Any, spec: str | None) -> tuple[Any, str]:
    from lminspect.stitch import parse_plan, plan_to_string
    from lminspect.validate import plan_given

    plan_given(spec)
    p = parse_plan(spec, lm.n_layers)
    return p, plan_to_string(p, lm.n_layers)


def _check_out(out: Path | None, overwrite: bool, allowed: set[str], inputs: tuple[str | None, ...] = ()) -> None:
    """Refuse a bad or existing output before any compute."""
    from lminspect.errors import UserError

    if out is None:
        return
    if out.suffix.lower() not in allowed:
        raise UserError(f"--out {out}: expected a file ending in {', '.join(sorted(allowed))}")
    from lminspect.fsutil import check_output

    check_output(out, kind="file", overwrite=overwrite, inputs=inputs)


def _check_save(save: Path | None, overwrite: bool, inputs: tuple[str | None, ...]) -> None:
    """A bad --save (suffix, existing file, no matplotlib) fails before any compute."""
    if save is not None:
        from lminspect.figures import check_figure_path

        check_figure_path(save, overwrite, inputs)


def _write(out: Path, data: dict[str, Any], grid: Any = None) -> None:
    import json

    from lminspect.fsutil import atomic_path, atomic_write_text

    suffix = out.suffix.lower()
    if suffix == ".json":
        atomic_write_text(out, json.dumps(data, indent=1) + "\n")
    elif suffix == ".csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["plan_pos", *data["cols"]])
        for label, row in zip(data["rows"], grid, strict=True):
            w.writerow([label, *(f"{v:.6g}" for v in row)])
        atomic_write_text(out, buf.getvalue())
    else:
        import numpy as np

        with atomic_path(out) as tmp, open(tmp, "wb") as f:
            np.savez(f, recovered=grid, values=np.asarray(data["values"]), rows=np.array(data["rows"]),
                     cols=np.array(data["cols"]), clean=data["clean"], corrupt=data["corrupt"])


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def lens_command(
    model: str = typer.Argument(..., help=MODEL_HELP),
    prompt: str | None = typer.Argument(None, help="Text whose next token is read out.", show_default=False),
    prompt_opt: str | None = typer.Option(None, "--prompt", hidden=True),  # the old spelling
    plan: str | None = typer.Option(None, "--plan", "-p", help=PLAN_HELP),
    target: str | None = typer.Option(None, "--target", help=TOKEN_HELP + " Adds its rank/probability per position."),
    compare: str | None = typer.Option(None, "--compare", help="A second plan, shown beside the first "
                                       "(e.g. --compare all for the baseline)."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="Tokens shown per position."),
    position: int = typer.Option(-1, "--position", help="Token position read (negative from the end)."),
    plot: str = typer.Option("prob", "--plot", help="prob | rank | none: the target across positions."),
    out: Path | None = typer.Option(None, "--out", "-o", help="File (.json): the result."),
    save: Path | None = typer.Option(None, "--save", help="Also save the figure as PNG or SVG (by the suffix; the "
                                     "figures extra): the --target's probability (or rank, --plot rank) per position, a line per plan."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out or --save if it exists."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16."),
    threads: Threads = None,
) -> None:
    """Logit lens: the next-token distribution read out after every plan position (final norm +
    head applied to the residual stream), as a top-k table, plus the rank or probability of
    --target across positions.

    Example: lminspect lens smollm2 "The capital of France is" --target " Paris"
    --plan 0-23,27-29 --compare all
    """
    from lminspect.stitch.plans import check_plan_early

    check_plan_early(plan)  # a typo is one line at once, before torch and the model load
    check_plan_early(compare, "--compare")
    from lminspect.cli.aliases import prompt_of
    from lminspect.runtime import set_threads

    prompt = prompt_of(prompt, prompt_opt, 'lminspect lens MODEL "TEXT"')
    n_threads = set_threads(threads)
    from lminspect.errors import UserError
    from lminspect.lens import lens_of_text
    from lminspect.lens.render import lens_figure, lens_table

    if plot not in ("prob", "rank", "none"):
        raise UserError(f"--plot {plot!r}: expected prob, rank or none")
    from lminspect.validate import count

    count("--top-k", top_k, maximum=1000)  # columns of a table: more than a screen holds is a mistake
    _check_out(out, overwrite, {".json"}, (model, plan))
    _check_save(save, overwrite, (model, plan))
    if save is not None and target is None:
        raise UserError(f"--save {save}: the lens figure plots --target; give one")
    lm, tok = _open(model, dtype)
    if top_k > lm.vocab_size:
        raise UserError(f"--top-k {top_k}: the model has only {lm.vocab_size} tokens")
    from lminspect.lens.readout import target_text

    target = target_text(target) if target is not None else None  # one rule for typed tokens (TOKEN_HELP)
    plans = {"plan": _plan(lm, plan)}
    if compare is not None:
        plans["compare"] = _plan(lm, compare)
    results, tgt = {}, None
    for p, text in plans.values():
        name = text if text not in results else f"{text} (2)"
        results[name], tgt = lens_of_text(lm, tok, prompt, p, target=target, k=top_k, position=position)
    con = _console()
    if tgt is not None and tgt.note:
        con.print(f"note: {tgt.note}", style="dim", markup=False)
    for name, res in results.items():
        con.print(lens_table(res))
        first = res.first_top()
        if tgt is not None:
            con.print(f"{name}: {tgt.text!r} is the top token " + (f"from row {res.labels[first]} on" if first is not None
                                                                    else "at no row to the end") + "\n", markup=False)
    if tgt is not None and plot != "none":
        con.print(lens_figure(results, what=plot, width=min(100, con.width), color=con.is_terminal), highlight=False,
                  markup=False)
    if out is not None:
        _write(out, {"prompt": prompt, "results": {k: v.to_dict() for k, v in results.items()}})
        con.print(f"wrote {out}", style="dim", markup=False)
    if save is not None:
        from lminspect.figures import save_lines
        from lminspect.lens.render import lens_lines

        d = lens_lines(results, what="rank" if plot == "rank" else "prob")
        if d is not None:
            save_lines(save, d.series, title=d.title, xlabel=d.xlabel, ylabel=d.ylabel, overwrite=overwrite)
            con.print(f"saved {save}", style="dim", markup=False)
    _summary(f"logit lens of {len(next(iter(results.values())).tokens)} tokens, {len(results)} plan(s)", n_threads)


def dla_command(
    model: str = typer.Argument(..., help=MODEL_HELP),
    prompt: str | None = typer.Argument(None, help="Text whose next-token logit is attributed.", show_default=False),
    prompt_opt: str | None = typer.Option(None, "--prompt", hidden=True),  # the old spelling
    target: str = typer.Option(..., "--target", help=TOKEN_HELP),
    baseline: str | None = typer.Option(None, "--baseline", help="Attribute logit(target) - logit(baseline) instead "
                                        "(a token, read as --target is)."),
    plan: str | None = typer.Option(None, "--plan", "-p", help=PLAN_HELP),
    heads: bool = typer.Option(True, "--heads/--no-heads", help="Also show the per-head grid."),
    position: int = typer.Option(-1, "--position", help="Token position read (negative from the end)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="File (.json): the result."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16."),
    threads: Threads = None,
) -> None:
    """Direct logit attribution: what each plan position's attention and MLP (and each head) add
    straight to the target's logit, through the final norm with its scale frozen at that position
    (docs/lens.md); the rows sum to the model's logit.

    Example: lminspect dla smollm2 "The capital of France is" --target " Paris" --baseline " Rome"
    """
    from lminspect.stitch.plans import check_plan_early

    check_plan_early(plan)  # a typo is one line at once, before torch and the model load
    from lminspect.cli.aliases import prompt_of
    from lminspect.runtime import set_threads

    prompt = prompt_of(prompt, prompt_opt, 'lminspect dla MODEL "TEXT" --target TOKEN')
    n_threads = set_threads(threads)
    from lminspect.lens import direct_logit_attribution, resolve_token
    from lminspect.lens.readout import encode_prompt
    from lminspect.lens.render import dla_heads_table, dla_table

    _check_out(out, overwrite, {".json"}, (model, plan))
    lm, tok = _open(model, dtype)
    ids = encode_prompt(tok, prompt, lm.context_length, vocab=lm.vocab_size)
    from lminspect.lens.readout import target_text

    tgt = resolve_token(tok, target_text(target), lm.vocab_size)
    base = resolve_token(tok, target_text(baseline), lm.vocab_size) if baseline is not None else None
    p, text = _plan(lm, plan)
    res = direct_logit_attribution(lm, ids, tgt, p, baseline=base, position=position, plan_text=text)
    con = _console()
    for t in (tgt, base):
        if t is not None and t.note:
            con.print(f"note: {t.note}", style="dim", markup=False)
    con.print(dla_table(res))
    if heads:
        con.print(dla_heads_table(res))
    if out is not None:
        _write(out, res.to_dict())
        con.print(f"wrote {out}", style="dim", markup=False)
    _summary(f"direct logit attribution of {len(ids)} tokens", n_threads)


def patch_command(
    model: str = typer.Argument(..., help=MODEL_HELP),
    clean: str = typer.Option(..., "--clean", help="The prompt whose activations are copied in."),
    corrupt: str = typer.Option(..., "--corrupt", help="The prompt that is patched (same number of tokens)."),
    metric: str = typer.Option(..., "--metric", help="'logit_diff: Paris,Rome', 'logit: Paris', 'logprob: Paris' "
                               "or 'prob: Paris' at the last token. Tokens are read as --target is: a bare word "
                               "means the word after a space (Paris -> ' Paris'); quote to keep exact text "
                               "('logit: \"Paris\"'), or id:N."),
    site: str = typer.Option("resid", "--site", help="resid | attn | mlp (grid: positions x tokens) or head "
                             "(grid: positions x heads, patched at every token)."),
    plan: str | None = typer.Option(None, "--plan", "-p", help=PLAN_HELP),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="Patched runs per batched forward."),
    out: Path | None = typer.Option(None, "--out", "-o", help="File (.json with metadata, .csv or .npz): the grid."),
    save: Path | None = typer.Option(None, "--save", help="Also save the figure as PNG or SVG (by the suffix; the "
                                     "figures extra): the recovered-fraction grid as a heatmap."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out or --save if it exists."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16."),
    threads: Threads = None,
) -> None:
    """Activation patching: copy one site's activation from the clean run into the corrupted run
    at each plan position and token (or head) and show how much of the clean metric comes back
    (1 = all, 0 = none) as a grid.

    Example: lminspect patch smollm2 --clean "The capital of France is" --corrupt "The capital of Italy is"
    --metric "logit_diff: Paris,Rome" --site resid --out patch.json
    """
    from lminspect.stitch.plans import check_plan_early

    check_plan_early(plan)  # a typo is one line at once, before torch and the model load
    from lminspect.runtime import Progress, set_threads

    n_threads = set_threads(threads)
    from lminspect.errors import UserError
    from lminspect.lens import PATCH_SITES, activation_patching, parse_metric
    from lminspect.lens.readout import encode_prompt, token_labels
    from lminspect.lens.render import patch_table

    if site not in PATCH_SITES:
        raise UserError(f"--site {site!r}: expected one of {', '.join(PATCH_SITES)}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    _check_out(out, overwrite, _OUT_SUFFIXES, (model, plan))
    _check_save(save, overwrite, (model, plan))
    lm, tok = _open(model, dtype)
    c = encode_prompt(tok, clean, lm.context_length, "clean prompt", lm.vocab_size)
    x = encode_prompt(tok, corrupt, lm.context_length, "corrupted prompt", lm.vocab_size)
    m = parse_metric(metric, tok, lm.vocab_size)
    p, text = _plan(lm, plan)
    with Progress("patch", None, "patched runs") as prog:
        res = activation_patching(lm, c, x, m, p, site=site, batch_size=batch_size, plan_text=text,
                                  col_labels=token_labels(tok, x), progress=prog.update)
    con = _console()
    for t in (m.a, m.b):
        if t is not None and t.note:
            con.print(f"note: {t.note}", style="dim", markup=False)
    con.print(patch_table(res))
    best = ", ".join(f"{r}/{c_!r}: {v:.2f}" for r, c_, v in res.best(3))
    con.print(f"most recovered: {best}  ({res.forwards} patched runs; the first {res.shared_prefix} tokens are "
              "shared and need none)")
    if out is not None:
        _write(out, res.to_dict(), res.recovered)
        con.print(f"wrote {out}", style="dim", markup=False)
    if save is not None:
        from lminspect.figures import save_heatmap

        save_heatmap(save, res.recovered, title=f"patching {res.site}, plan {res.plan}: recovered fraction of "
                     f"{res.metric}", xlabels=res.cols, ylabels=res.rows,
                     xlabel="head" if res.site == "head" else "token", ylabel="plan position", overwrite=overwrite)
        con.print(f"saved {save}", style="dim", markup=False)
    _summary(f"patching: {res.forwards} patched runs", n_threads, prog.t0)


def _summary(what: str, n_threads: int, t0: float | None = None) -> None:
    import sys

    from lminspect.runtime import run_summary

    print(run_summary(what, n_threads, t0), file=sys.stderr)


def register(app: typer.Typer) -> None:
    """Add ``lens``, ``dla`` and ``patch`` to the main app."""
    app.command("lens", rich_help_panel="Interpretability")(lens_command)
    app.command("dla", rich_help_panel="Interpretability")(dla_command)
    app.command("patch", rich_help_panel="Interpretability")(patch_command)
