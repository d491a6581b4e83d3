"""``lminspect stitch ...`` and ``lminspect attention``: seed 002's Frankenllama workflow as commands.

Plans use the compact grammar (INCLUSIVE ranges, ``0-23`` = 24 layers), preset names, or
mergekit-style YAML/JSON/TOML files (HALF-OPEN ``layer_range``). See ``lminspect stitch show --help``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from lminspect.cli.generate_cmd import WEIGHTS_HELP, stream_text
from lminspect.cli.threads import Threads
from lminspect.runtime import run_summary, set_threads, threads_label

PLAN_HELP = (
    "Layer plan: '0-23,27-29' (ranges INCLUSIVE), '15r3', '14-19r2*0.8', 'skip:15', 'even', a preset name, "
    "or a mergekit YAML/JSON/TOML file (layer_range HALF-OPEN)."
)
MODEL_HELP = "Model: a HF directory, .safetensors, .gguf, or a fetched name such as 'smollm2'."


class _RunByDefault(TyperGroup):
    """``lminspect stitch MODEL [TEXT] --plan ...`` means ``lminspect stitch run MODEL [TEXT] --plan ...``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


stitch_app = typer.Typer(
    name="stitch",
    cls=_RunByDefault,
    no_args_is_help=True,
    help="Skip, repeat and scale decoder layers and see what changes. 'lminspect stitch MODEL \"TEXT\" --plan P' "
    "continues the prompt TEXT with that plan.\n\n"
    "Plan grammar: 7 | 0-23 (INCLUSIVE) | 15r3 | 14-19r2 | all | even | odd | skip:27-29 or -27-29 | "
    "ITEM*0.5, ITEM*attn=0.5, ITEM*mlp=0.5. mergekit files: layer_range [0, 24] is HALF-OPEN.",
)


# --------------------------------------------------------------------------- helpers


def _load(model: str, dtype: str = "float32", need_tokenizer: bool = True,
          weights: str | None = "auto") -> tuple[Any, Any, Any]:
    """Open a model for a command; ``weights`` auto keeps a 7B bf16 / GGUF in its stored form."""
    from lminspect.models.open import open_model

    store, lm, tok = open_model(model, dtype=dtype, weights=weights, tokenizer=need_tokenizer)
    return store, lm, tok


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


# --------------------------------------------------------------------------- run


@stitch_app.command("run")
def run(
    model: str = typer.Argument(..., help=MODEL_HELP),
    prompt: str | None = typer.Argument(None, help="Text to continue (default 'Once upon a time').",
                                        show_default=False),
    plan: str = typer.Option("all", "--plan", "-p", help=PLAN_HELP),
    prompt_opt: str | None = typer.Option(None, "--prompt", hidden=True),  # the old spelling
    max_tokens: int = typer.Option(48, "--max-new-tokens", "-n", help="New tokens to generate."),
    max_tokens_opt: int | None = typer.Option(None, "--max-tokens", hidden=True),  # the old spelling
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy."),
    temperature_opt: float | None = typer.Option(None, "-t", hidden=True),  # -t is --tensor elsewhere
    seed: int | None = typer.Option(None, "--seed", help="Sampling seed."),
    compare: bool = typer.Option(False, "--compare", help="Also stream the unstitched baseline."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16."),
    weights: str = typer.Option("auto", "--weights", help=WEIGHTS_HELP),
    threads: Threads = None,
) -> None:
    """Continue a prompt with some layers skipped or repeated; --compare streams the untouched model beside it.

    Example: lminspect stitch smollm2 "Once upon a time" --plan "0-23,27-29" --compare

    Plans, scales and --compare run on the stored low-bit weights too (--weights; the stats line says which).
    """
    from lminspect.stitch.plans import check_plan_early

    check_plan_early(plan)  # a typo is one line at once, before torch and the model load
    from lminspect.cli.aliases import prompt_of, renamed
    from lminspect.generate import generate
    from lminspect.stitch import describe_plan, parse_plan
    from lminspect.stitch.export import materialize
    from lminspect.stitch.mergekit import warn_model_mismatch

    prompt = prompt_of(prompt, prompt_opt, 'lminspect stitch MODEL "TEXT" --plan P', default="Once upon a time")
    max_tokens = renamed(max_tokens, max_tokens_opt, "--max-tokens", "--max-new-tokens", 48)
    temperature = renamed(temperature, temperature_opt, "-t", "--temperature", 0.0)
    n_threads = set_threads(threads)
    store, lm, tok = _load(model, dtype, weights=weights)
    from lminspect.validate import plan_given

    plan_given(plan)
    p = parse_plan(plan, lm.n_layers)
    warn_model_mismatch(p, model, store)
    summary = describe_plan(p, lm.n_layers, model=lm)
    stitched, run_plan = materialize(lm, p)  # a mergekit 'scale' needs the weights themselves scaled
    err = _console(stderr=True)
    err.print(f"plan {summary.text}: {summary.calls} layer calls of {lm.n_layers}, "
              f"{summary.params_touched:.0%} of parameters", style="dim", markup=False)
    kw = dict(max_new_tokens=max_tokens, temperature=temperature, seed=seed)
    if not compare:
        gen = generate(stitched, tok, prompt, plan=run_plan, **kw)
        sys.stdout.write(prompt)
        stream_text(gen, n_threads)
        err.print(f"{gen.stats.line()}, {threads_label(n_threads)}", style="dim", markup=False)
        return
    gens = {"baseline": generate(lm, tok, prompt, plan=None, **kw), summary.text: generate(stitched, tok, prompt, plan=run_plan, **kw)}
    if sys.stdout.isatty():
        _compare_live(prompt, gens)
    else:
        for name, gen in gens.items():
            print(f"== {name}")
            sys.stdout.write(prompt)
            stream_text(gen, n_threads)
    for name, gen in gens.items():
        err.print(f"{name}: {gen.stats.line()}, {threads_label(n_threads)}", style="dim", markup=False)


def _compare_live(prompt: str, gens: dict[str, Any]) -> None:
    """Two columns streaming at once (one token of each in turn) in a rich Live view."""
    from rich.columns import Columns
    from rich.live import Live
    from rich.panel import Panel

    from lminspect.generate import interleave

    texts = {name: prompt for name in gens}

    def view():
        return Columns([Panel(texts[n], title=n, width=max(30, (_console().width - 4) // 2)) for n in gens])

    with Live(view(), refresh_per_second=12, console=_console()) as live:
        for name, piece in interleave(gens):
            texts[name] += piece
            live.update(view())


# --------------------------------------------------------------------------- show / presets


def _depth(layers: int | None, model: str | None) -> int:
    from lminspect.errors import UserError

    if layers is not None:
        if layers < 1:
            raise UserError(f"--layers must be >= 1, got {layers}")
        return layers
    if model is not None:
        from lminspect.weights import open_store

        n = open_store(model).n_layers
        if not n:
            raise UserError(f"{model}: cannot tell its number of layers")
        return n
    from lminspect.stitch import SEED_DEPTH

    return SEED_DEPTH


@stitch_app.command("show")
def show(
    model: str | None = typer.Argument(None, help=MODEL_HELP + " Optional: without it, --layers (default 32)."),
    plan: str | None = typer.Option(None, "--plan", "-p", help=PLAN_HELP),
    layers: int | None = typer.Option(None, "--layers", "-L", help="Model depth when no MODEL is given "
                                      "(default 32, as Llama-2 7B)."),
    model_opt: str | None = typer.Option(None, "--model", "-m", hidden=True),  # the old spelling
) -> None:
    """Print the layers a plan runs, in order, and what it skips and repeats.

    Grammar ranges (0-23) are INCLUSIVE; mergekit layer_range [0, 24] is HALF-OPEN.

    Example: lminspect stitch show smollm2 --plan 15r3_23r3_31r3
    """
    from rich.markup import escape

    from lminspect.errors import UserError
    from lminspect.stitch import describe_plan, parse_plan

    if plan is None:
        raise UserError("stitch show: give the plan with --plan (e.g. lminspect stitch show smollm2 --plan 0-23,27-29)")
    n = _depth(layers, model or model_opt)
    from lminspect.validate import plan_given

    plan_given(plan)
    p = parse_plan(plan, n)
    s = describe_plan(p, n)
    con = _console()
    con.print(f"plan [bold]{escape(s.text)}[/bold] on {n} layers")
    seq = " ".join(
        str(c.index) + ("" if (c.attn_scale, c.mlp_scale) == (1.0, 1.0) else f"(a{c.attn_scale:g},m{c.mlp_scale:g})")
        + "".join(f"[{kind}{h}={v:g}]" for kind, hs in (("h", c.heads), ("kv", c.kv_heads)) for h, v in hs)
        for c in p
    )
    con.print(f"sequence ({s.calls} calls): {escape(seq)}")
    con.print(f"skipped: {', '.join(map(str, s.skipped)) or 'none'}")
    con.print("repeated: " + (", ".join(f"{k}x{v}" for k, v in s.repeated.items()) or "none"))
    con.print(f"compute {s.compute:.0%} of baseline; blocks touched {s.unique}/{n} ({s.params_touched:.0%})")


@stitch_app.command("presets")
def presets(
    model: str | None = typer.Argument(None, help=MODEL_HELP + " Optional: show the presets rescaled to its depth."),
    layers: int | None = typer.Option(None, "--layers", "-L", help="Also show each preset rescaled to this depth."),
    model_opt: str | None = typer.Option(None, "--model", "-m", hidden=True),  # the old spelling
) -> None:
    """List the named layer plans (defined on 32 layers, rescaled to a model's depth).

    Example: lminspect stitch presets smollm2
    """
    from rich import box
    from rich.table import Table

    from lminspect.stitch import PRESETS, SEED_DEPTH, describe_plan, parse_plan, preset_spec
    from lminspect.stitch.presets import preset_description

    model = model or model_opt
    n = _depth(layers, model) if (layers or model) else SEED_DEPTH
    # SIMPLE_HEAD and folding descriptions keep the table inside 80 columns
    t = Table(title=f"stitch presets (seed 002; shown for {n} layers)", box=box.SIMPLE_HEAD, padding=(0, 1))
    t.add_column("name", no_wrap=True)
    t.add_column(f"plan on {n} layers", overflow="fold", max_width=22)
    t.add_column("calls", justify="right")
    t.add_column("what", overflow="fold", ratio=1)  # in the layer numbers of the plan beside it
    for name, (spec, _) in PRESETS.items():
        shown = spec if n == SEED_DEPTH else preset_spec(name, n)
        t.add_row(name, shown, str(describe_plan(parse_plan(name, n), n).calls), preset_description(name, n))
    con = _console()
    con.print(t)
    con.print("[dim]Presets are defined on 32 layers (lminspect stitch presets) and rescaled: range "
              "boundaries b (half-open) map to round(b*n/32); single layers to the nearest layer centre; "
              "even/odd/all/skip keep their meaning.[/dim]")


# --------------------------------------------------------------------------- sweep


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def parse_batch_size(value: str) -> int | None:
    """``--batch-size``: a positive whole number of items, or 'auto' (None)."""
    from lminspect.errors import UserError

    if value.strip().lower() == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        raise UserError(f"--batch-size {value!r}: expected a whole number of items or 'auto'") from None
    if n < 1:
        raise UserError(f"--batch-size {n}: need at least one item per batch")
    return n


@stitch_app.command("sweep")
def sweep(
    model: str = typer.Argument(..., help=MODEL_HELP),
    plans: str = typer.Option("presets", "--plans", help="'presets', preset names (comma-separated), or a "
                              "TOML/YAML/JSON file mapping names to plans."),
    plan: list[str] | None = typer.Option(None, "--plan", "-p", help="An inline plan NAME=SPEC (repeatable), e.g. "
                                          "--plan 'cut=0-23,27-29' --plan 'rep=0-14,15r2,16-29'. Given alone "
                                          "they replace the presets; with --plans they are added."),
    eval_: str = typer.Option(..., "--eval", help="Multiple-choice set: .jsonl/.parquet (HellaSwag format), a HF "
                              "dataset id, or 'cloze' (built from the shipped corpus)."),
    limit: int = typer.Option(50, "--limit", help="Items to evaluate."),
    batch_size: str = typer.Option("auto", "--batch-size", "-b", help="Items per forward, or 'auto': items of "
                                   "nearly equal length on a CPU (padding only costs there), many more on a GPU."),
    separate: bool = typer.Option(False, "--separate", help="Score plans one after another (a time per plan) "
                                  "instead of sharing their common layer calls."),
    log_items: Path | None = typer.Option(None, "--log-items", help="Also write per-item results (jsonl: plan, id, "
                                          "per-ending log-likelihoods, lengths, choices, label)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --log-items file."),
    ppl_data: str | None = typer.Option(None, "--ppl-data", help="Also measure perplexity on this text set."),
    ppl_tokens: int = typer.Option(4096, "--ppl-tokens", help="Tokens of --ppl-data to score."),
    out: Path = typer.Option(Path("results"), "--out", "-o", help="Folder for the JSON and CSV results (named "
                             "by model and time)."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16."),
    threads: Threads = None,
) -> None:
    """Score many layer plans on a multiple-choice set (acc, acc_norm with lm-eval's standard errors).

    Plans share their common layer calls (a prefix tree per batch of items): the summary line
    says how many calls ran against how many the plans name. Example:

        lminspect stitch sweep smollm2 --eval cloze --limit 200 --plan 'cut=0-23,27-29' --plans presets

    Several processes split the items (rank 0 writes; same scores as one process):

        torchrun --standalone --nproc_per_node 2 -m lminspect stitch sweep smollm2 --eval cloze

    Several machines: run on each torchrun --nnodes 2 --node_rank {0|1} --nproc_per_node 2
    --rdzv_backend c10d --rdzv_endpoint HOST:29500 -m lminspect stitch sweep ...
    """
    from lminspect.stitch.plans import check_plan_early

    check_plan_early(plan, sweep=plans)  # a typo is one line at once, before torch and the model load
    from lminspect.evals.datasets import mc_items
    from lminspect.evals.sweep import SweepWriter, run_sweep
    from lminspect.fsutil import check_output
    from lminspect.runtime import Progress, interrupted
    from lminspect.stitch import sweep_plans

    ins = (model, eval_, ppl_data, *(plan or ()), plans)
    check_output(out, kind="dir", overwrite=False, allow_nonempty=True, inputs=ins)  # files named by time
    if log_items is not None:
        check_output(log_items, kind="file", overwrite=overwrite, option="--log-items", inputs=ins)
    from lminspect.validate import count

    count("--limit", limit)
    count("--ppl-tokens", ppl_tokens)
    n_threads = set_threads(threads)
    bs = parse_batch_size(batch_size)
    store, lm, tok = _load(model, dtype)
    named = sweep_plans(plans, plan, lm.n_layers)
    items = mc_items(eval_, limit=limit)
    texts = None
    if ppl_data:
        from lminspect.documents import read_documents

        texts = read_documents(ppl_data)
    label = Path(model.rstrip("/")).stem if Path(model).exists() else model
    writer = SweepWriter(out, label, {"model": str(model), "eval": eval_, "limit": limit, "batch_size": batch_size,
                                      "threads": n_threads, "ppl_data": ppl_data, "n_layers": lm.n_layers},
                         n_plans=len(named))
    main = writer.writes  # under torchrun only rank 0 writes and prints
    from lminspect.runtime import nice_count

    def quick(seconds: float) -> str:
        return f"--limit {nice_count(len(items) * 60 / seconds)} for a quick look"

    with interrupted(writer.saved), Progress("sweep", len(items) * len(named), "item x plan",
                                             bar=None if main else False, quick=quick if main else None,
                                             threads=n_threads) as prog:
        res = run_sweep(lm, tok, items, named, batch_size=bs, separate=separate, progress=prog.update if main else None,
                        ppl_texts=texts, ppl_tokens=ppl_tokens, on_row=writer.on_row)
    if main:
        writer.finish(res, threads=n_threads, world_size=res.meta.get("world_size", 1))
        _finish_sweep(res, writer.base, writer.meta, items, label, log_items, overwrite)


def _finish_sweep(res: Any, base: Path, meta: dict[str, Any], items: list[Any], label: str,
                  log_items: Path | None, overwrite: bool) -> None:
    """The item log, the table, and the summary line (the JSON/CSV are complete already)."""
    from rich.markup import escape

    from lminspect.evals.sweep import write_item_log

    if log_items is not None:
        write_item_log(log_items, items, res.results, overwrite=overwrite)
    _console().print(_sweep_table(res.rows, f"stitch sweep: {escape(label)}, {len(items)} items, "
                                            f"chance {1 / len(items[0].endings):.2f}"))
    written = f"{base}.json and {base}.csv" + (f", {log_items}" if log_items is not None else "")
    _console(stderr=True).print(f"{res.summary()}, {threads_label(meta['threads'])}; wrote {written}", style="dim",
                                markup=False)


def _sweep_table(rows: list[dict[str, Any]], title: str) -> Any:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=title)
    for col in ("plan", "layers run", "params", "acc", "acc_norm", "ppl", "seconds"):
        t.add_column(col, justify="left" if col == "plan" else "right")
    for r in rows:
        t.add_row(escape(r["plan"]), str(r["layers_run"]), f"{r['params_touched']:.0%}",
                  f"{r['acc']:.3f} ± {r['acc_stderr']:.3f}", f"{r['acc_norm']:.3f} ± {r['acc_norm_stderr']:.3f}",
                  _fmt(r["ppl"], ".2f"), _fmt(r["seconds"], ".1f"))
    return t

# --------------------------------------------------------------------------- export


@stitch_app.command("export")
def export(
    model: str = typer.Argument(..., help=MODEL_HELP),
    out_arg: Path | None = typer.Argument(None, metavar="[OUT_DIR]", help="Same as --out.", show_default=False),
    plan: str = typer.Option(..., "--plan", "-p", help=PLAN_HELP),
    out_opt: Path | None = typer.Option(None, "--out", "-o", help="Folder: the HF-style model directory to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output (only once the new "
                                                             "one is complete)."),
    threads: Threads = None,
) -> None:
    """Save the stitched model as a normal model directory that lminspect and transformers load.

    Works for llama, gpt2 and falcon-rw: repeated layers get their own copy of the weights,
    scales are folded into each layer's attention-output and MLP-down projections, and
    the tokenizer files are copied (the chat template as chat_template.jinja, where
    transformers 5 saves it).

    A mergekit passthrough config gives the same tensors as `mergekit-yaml`: its
    `parameters: {scale: ...}` (filters, gradients, top level), `dtype` and `out_dtype`
    mean what they mean there; keys lminspect ignores are named in one line each.

    Example: lminspect stitch export smollm2 --out short_model/ --plan "0-23,27-29"
             lminspect stitch export smollm2 -o merged/ --plan mergekit.yaml
    """
    from lminspect.stitch.plans import check_plan_early

    check_plan_early(plan)  # a typo is one line at once, before torch and the model load
    from lminspect.cli.aliases import out_of

    out_dir = out_of(out_arg, out_opt, "lminspect stitch export MODEL --out DIR --plan P")
    from lminspect.fsutil import check_output
    from lminspect.stitch import export_stitched, parse_plan
    from lminspect.stitch.mergekit import warn_model_mismatch
    from lminspect.weights.export import tokenizer_side_files
    from lminspect.weights.provenance import source_record

    check_output(out_dir, kind="dir", overwrite=overwrite, option="OUT_DIR", inputs=(model, plan))
    n_threads = set_threads(threads)
    t0 = time.perf_counter()
    store, lm, _ = _load(model, need_tokenizer=False, weights=None)  # export dequantizes every tensor anyway
    from lminspect.validate import plan_given

    plan_given(plan)
    p = parse_plan(plan, lm.n_layers)
    warn_model_mismatch(p, model, store)
    tj = store.tokenizer_json() if hasattr(store, "tokenizer_json") else None
    export_stitched(lm, p, out_dir, tokenizer_json=tj, extra_files=tokenizer_side_files(store),
                    source=source_record(store))
    typer.echo(f"wrote {out_dir} ({len(p)} layers)")
    print(run_summary(f"exported {len(p)} layer occurrences", n_threads, t0), file=sys.stderr)


def register(app: typer.Typer) -> None:
    """Add ``stitch`` (sub-app) to the main app."""
    app.add_typer(stitch_app, name="stitch", rich_help_panel="Stitching")
