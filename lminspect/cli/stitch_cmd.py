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

PLAN_HELP = (
    "Layer plan: '0-23,27-29' (ranges INCLUSIVE), '15r3', '14-19r2*0.8', 'skip:15', 'even', a preset name, "
    "or a mergekit YAML/JSON/TOML file (layer_range HALF-OPEN)."
)
MODEL_HELP = "Model: a HF directory, .safetensors, .gguf, or a fetched name such as 'smollm2'."


class _RunByDefault(TyperGroup):
    """``lminspect stitch MODEL --plan ...`` means ``lminspect stitch run MODEL --plan ...``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


stitch_app = typer.Typer(
    name="stitch",
    cls=_RunByDefault,
    no_args_is_help=True,
    help="Skip, repeat and scale decoder layers (seed 002). 'lminspect stitch MODEL --plan P' runs a prompt.\n\n"
    "Plan grammar: 7 | 0-23 (INCLUSIVE) | 15r3 | 14-19r2 | all | even | odd | skip:27-29 or -27-29 | "
    "ITEM*0.5, ITEM*attn=0.5, ITEM*mlp=0.5. mergekit files: layer_range [0, 24] is HALF-OPEN.",
)


# --------------------------------------------------------------------------- helpers


def _load(model: str, dtype: str = "float32", need_tokenizer: bool = True) -> tuple[Any, Any, Any]:
    from lminspect.errors import UserError
    from lminspect.models import load_model
    from lminspect.weights import open_store

    store = open_store(model)
    lm = load_model(store, dtype=dtype)
    tok = None
    if need_tokenizer:
        from lminspect.tokenizer import load_tokenizer

        tok = load_tokenizer(store)
        if tok is None:
            raise UserError(f"{model}: no tokenizer found (tokenizer.json or GGUF metadata)")
    return store, lm, tok


def _threads() -> None:
    import os

    import torch

    if "OMP_NUM_THREADS" in os.environ:
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


# --------------------------------------------------------------------------- run


@stitch_app.command("run")
def run(
    model: str = typer.Argument(..., help=MODEL_HELP),
    plan: str = typer.Option("all", "--plan", "-p", help=PLAN_HELP),
    prompt: str = typer.Option("Once upon a time", "--prompt", help="Text to continue."),
    max_tokens: int = typer.Option(48, "--max-new-tokens", "--max-tokens", "-n", help="New tokens to generate."),
    temperature: float = typer.Option(0.0, "--temperature", "-t", help="0 = greedy."),
    seed: int | None = typer.Option(None, "--seed", help="Sampling seed."),
    compare: bool = typer.Option(False, "--compare", help="Also stream the unstitched baseline."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16."),
) -> None:
    """Stream a continuation of PROMPT through the stitched model (seed 002's 'Once upon a time' test)."""
    from lminspect.generate import generate
    from lminspect.stitch import describe_plan, parse_plan

    _threads()
    _, lm, tok = _load(model, dtype)
    p = parse_plan(plan, lm.n_layers)
    summary = describe_plan(p, lm.n_layers, model=lm)
    err = _console(stderr=True)
    err.print(f"[dim]plan {summary.text}: {summary.calls} layer calls of {lm.n_layers}, "
              f"{summary.params_touched:.0%} of parameters[/dim]")
    kw = dict(max_new_tokens=max_tokens, temperature=temperature, seed=seed)
    if not compare:
        gen = generate(lm, tok, prompt, plan=p, **kw)
        sys.stdout.write(prompt)
        for piece in gen:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        err.print(f"[dim]{gen.stats.line()}[/dim]")
        return
    gens = {"baseline": generate(lm, tok, prompt, plan=None, **kw), summary.text: generate(lm, tok, prompt, plan=p, **kw)}
    if sys.stdout.isatty():
        _compare_live(prompt, gens)
    else:
        for name, gen in gens.items():
            print(f"== {name}")
            sys.stdout.write(prompt)
            for piece in gen:
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
    for name, gen in gens.items():
        err.print(f"[dim]{name}: {gen.stats.line()}[/dim]")


def _compare_live(prompt: str, gens: dict[str, Any]) -> None:
    """Two columns streaming at once (one token of each in turn) in a rich Live view."""
    from rich.columns import Columns
    from rich.live import Live
    from rich.panel import Panel

    texts = {name: prompt for name in gens}
    iters = {name: iter(g) for name, g in gens.items()}

    def view():
        return Columns([Panel(texts[n], title=n, width=max(30, (_console().width - 4) // 2)) for n in gens])

    with Live(view(), refresh_per_second=12, console=_console()) as live:
        while iters:
            for name in list(iters):
                try:
                    texts[name] += next(iters[name])
                except StopIteration:
                    del iters[name]
            live.update(view())


# --------------------------------------------------------------------------- show / presets


def _depth(layers: int | None, model: str | None) -> int:
    from lminspect.errors import UserError

    if layers is not None:
        if layers < 1:
            raise UserError(f"--layers must be >= 1, got {layers}")
        return layers
    if model is not None:
        from lminspect.models import config_from_hf
        from lminspect.weights import open_store

        store = open_store(model)
        cfg = config_from_hf(dict(store.config or {}), getattr(store, "arch", None))
        for key in ("n_layers", "n_layer", "num_hidden_layers"):
            if getattr(cfg, key, None):
                return int(getattr(cfg, key))
        raise UserError(f"{model}: cannot tell its number of layers")
    from lminspect.stitch import SEED_DEPTH

    return SEED_DEPTH


@stitch_app.command("show")
def show(
    plan: str = typer.Argument(..., help=PLAN_HELP),
    layers: int | None = typer.Option(None, "--layers", "-L", help="Model depth (default 32, seed 002's Llama-2)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Take the depth from this model."),
) -> None:
    """Print the resolved layer sequence of PLAN, and what it skips and repeats.

    Grammar ranges (0-23) are INCLUSIVE; mergekit layer_range [0, 24] is HALF-OPEN."""
    from lminspect.stitch import describe_plan, parse_plan

    n = _depth(layers, model)
    p = parse_plan(plan, n)
    s = describe_plan(p, n)
    con = _console()
    con.print(f"plan [bold]{s.text}[/bold] on {n} layers")
    seq = " ".join(
        str(c.index) + ("" if (c.attn_scale, c.mlp_scale) == (1.0, 1.0) else f"(a{c.attn_scale:g},m{c.mlp_scale:g})")
        for c in p
    )
    con.print(f"sequence ({s.calls} calls): {seq}")
    con.print(f"skipped: {', '.join(map(str, s.skipped)) or 'none'}")
    con.print("repeated: " + (", ".join(f"{k}x{v}" for k, v in s.repeated.items()) or "none"))
    con.print(f"compute {s.compute:.0%} of baseline; blocks touched {s.unique}/{n} ({s.params_touched:.0%})")


@stitch_app.command("presets")
def presets(
    layers: int | None = typer.Option(None, "--layers", "-L", help="Also show each preset rescaled to this depth."),
    model: str | None = typer.Option(None, "--model", "-m", help="Rescale to this model's depth."),
) -> None:
    """List seed 002's named configurations (defined on 32 layers, rescaled proportionally)."""
    from rich.table import Table

    from lminspect.stitch import PRESETS, SEED_DEPTH, describe_plan, parse_plan, preset_spec

    n = _depth(layers, model) if (layers or model) else SEED_DEPTH
    t = Table(title=f"stitch presets (seed 002; shown for {n} layers)")
    t.add_column("name", no_wrap=True)
    t.add_column("on 32 layers", no_wrap=True)
    if n != SEED_DEPTH:
        t.add_column(f"on {n} layers", no_wrap=True)
    t.add_column("calls", justify="right")
    t.add_column("what")
    for name, (spec, desc) in PRESETS.items():
        row = [name, spec] + ([preset_spec(name, n)] if n != SEED_DEPTH else [])
        row += [str(describe_plan(parse_plan(name, n), n).calls), desc]
        t.add_row(*row)
    con = _console()
    con.print(t)
    con.print("[dim]Rescaling: range boundaries b (half-open) map to round(b*n/32); single layers to the "
              "nearest layer centre; even/odd/all/skip keep their meaning.[/dim]")


# --------------------------------------------------------------------------- sweep


def _fmt(x: Any, spec: str) -> str:
    return "-" if x is None else format(x, spec)


@stitch_app.command("sweep")
def sweep(
    model: str = typer.Argument(..., help=MODEL_HELP),
    plans: str = typer.Option("presets", "--plans", help="'presets', preset names (comma-separated), or a "
                              "TOML/YAML/JSON file mapping names to plans."),
    eval_: str = typer.Option(..., "--eval", help="Multiple-choice set: .jsonl/.parquet (HellaSwag format), a HF "
                              "dataset id, or 'cloze' (built from the shipped corpus)."),
    limit: int = typer.Option(50, "--limit", help="Items to evaluate."),
    ppl_data: str | None = typer.Option(None, "--ppl-data", help="Also measure perplexity on this text set."),
    ppl_tokens: int = typer.Option(4096, "--ppl-tokens", help="Tokens of --ppl-data to score."),
    out: Path = typer.Option(Path("results"), "--out", help="Folder for the JSON and CSV results."),
    mode: str = typer.Option("shared", "--mode", help="shared (context KV cached once) or full (harness way)."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16."),
) -> None:
    """Evaluate every plan on a multiple-choice set (acc, acc_norm) and optionally perplexity."""
    import csv
    import io
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from lminspect.evals.mc import evaluate_mc, load_mc
    from lminspect.fsutil import atomic_write_text, check_output
    from lminspect.stitch import describe_plan, load_plans

    check_output(out, kind="dir", overwrite=False, allow_nonempty=True)  # new files are named by time
    from lminspect.validate import count

    count("--limit", limit)
    count("--ppl-tokens", ppl_tokens)
    _threads()
    store, lm, tok = _load(model, dtype)
    named = load_plans(plans, lm.n_layers)
    if eval_ == "cloze":
        from lminspect.documents import read_documents
        from lminspect.evals.cloze import make_cloze
        from lminspect.evals.mc import hellaswag_item

        items = [hellaswag_item(r, k) for k, r in enumerate(make_cloze(read_documents("builtin"), n=limit))]
    else:
        items = load_mc(eval_, limit=limit)
    texts = None
    if ppl_data:
        from lminspect.documents import read_documents

        texts = read_documents(ppl_data)
    rows: list[dict[str, Any]] = []
    label = Path(model.rstrip("/")).stem if Path(model).exists() else model
    base = out / f"sweep-{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    for k in range(2, 1000):  # two sweeps in one second never replace each other's files
        if not (base.with_name(base.name + ".json").exists() or base.with_name(base.name + ".csv").exists()):
            break
        base = out / f"sweep-{label}-{time.strftime('%Y%m%d-%H%M%S')}-{k}"
    meta = {"model": str(model), "eval": eval_, "limit": limit, "mode": mode, "ppl_data": ppl_data,
            "n_layers": lm.n_layers, "complete": False, "rows": rows}

    def write_results() -> None:
        """JSON + CSV after every plan (atomically), so a long sweep leaves its finished rows."""
        atomic_write_text(base.with_name(base.name + ".json"), json.dumps(meta, indent=2) + "\n")
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(base.with_name(base.name + ".csv"), buf.getvalue())

    err = _console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as prog:
        overall = prog.add_task("plans", total=len(named))
        for name, p in named.items():
            task = prog.add_task(f"  {name}", total=len(items))
            summary = describe_plan(p, lm.n_layers, model=lm)
            res = evaluate_mc(lm, tok, items, plan=p, mode=mode,
                              progress=lambda k, n, task=task: prog.update(task, completed=k))
            row: dict[str, Any] = {
                "plan": name, "spec": summary.text, "layers_run": summary.calls,
                "params_touched": round(summary.params_touched, 4), "n": res.n,
                "acc": res.acc, "acc_norm": res.acc_norm, "acc_bytes": res.acc_bytes,
                "seconds": round(res.seconds, 3), "cpu_seconds": round(res.cpu_seconds, 3), "tokens_per_s": round(res.tokens_per_s, 1),
                "items_per_s": round(res.items_per_s, 2), "ppl": None,
            }
            if texts is not None:
                from lminspect.evals.perplexity import evaluate_perplexity

                eos = getattr(tok, "eos_id", None)
                pr = evaluate_perplexity(lm, tok, texts, plan=p, max_tokens=ppl_tokens, eos=eos)
                row["ppl"] = round(pr.ppl, 3)
            rows.append(row)
            write_results()
            if not err.is_terminal:
                err.print(f"{name}: acc {res.acc:.3f} acc_norm {res.acc_norm:.3f} {res.seconds:.1f} s")
            prog.remove_task(task)
            prog.advance(overall)
    meta["complete"] = True
    write_results()
    n_choices = len(items[0].endings)
    t = Table(title=f"stitch sweep: {label}, {len(items)} items, chance {1 / n_choices:.2f}")
    for col, just in [("plan", "left"), ("layers run", "right"), ("params", "right"), ("acc", "right"),
                      ("acc_norm", "right"), ("ppl", "right"), ("seconds", "right"), ("cpu s", "right"),
                      ("tok/s", "right")]:
        t.add_column(col, justify=just)
    for r in rows:
        t.add_row(r["plan"], str(r["layers_run"]), f"{r['params_touched']:.0%}", f"{r['acc']:.3f}",
                  f"{r['acc_norm']:.3f}", _fmt(r["ppl"], ".2f"), f"{r['seconds']:.1f}", f"{r['cpu_seconds']:.1f}",
                  f"{r['tokens_per_s']:.0f}")
    _console().print(t)
    _console(stderr=True).print(f"[dim]wrote {base}.json and {base}.csv[/dim]")

# --------------------------------------------------------------------------- export


@stitch_app.command("export")
def export(
    model: str = typer.Argument(..., help=MODEL_HELP),
    out_dir: Path = typer.Argument(..., help="Output HF-style directory."),
    plan: str = typer.Option(..., "--plan", "-p", help=PLAN_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output (only once the new "
                                                             "one is complete)."),
) -> None:
    """Write the stitched model as a standalone HF directory (llama, gpt2 or falcon-rw: weights
    duplicated per occurrence, scales folded into each layer's attention-output and MLP-down
    projections, tokenizer.json copied); loads in lminspect and transformers."""
    from lminspect.fsutil import check_output
    from lminspect.stitch import export_stitched, parse_plan

    check_output(out_dir, kind="dir", overwrite=overwrite, option="OUT_DIR")
    store, lm, _ = _load(model, need_tokenizer=False)
    p = parse_plan(plan, lm.n_layers)
    tj = store.tokenizer_json() if hasattr(store, "tokenizer_json") else None
    extra = {}
    src = Path(str(getattr(store, "path", "")))
    if src.is_dir():
        for name in ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
            if (src / name).is_file():
                extra[name] = (src / name).read_text(encoding="utf-8")
    export_stitched(lm, p, out_dir, tokenizer_json=tj, extra_files=extra)
    typer.echo(f"wrote {out_dir} ({len(p)} layers)")


# --------------------------------------------------------------------------- attention


ATTENTION_FILES = ("attn_probs.npy", "attn_fft.npy", "tokens.json")  # what `attention --out` writes
_CMAP = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]  # viridis stops


def _colour(x: float) -> str:
    x = min(1.0, max(0.0, x)) * (len(_CMAP) - 1)
    i = min(int(x), len(_CMAP) - 2)
    f = x - i
    r, g, b = (int(a + (c - a) * f) for a, c in zip(_CMAP[i], _CMAP[i + 1], strict=True))
    return f"rgb({r},{g},{b})"


def heatmap_text(mat: Any, title: str = "", labels: list[str] | None = None):
    """A matrix as coloured unicode blocks (rows = queries), min-max scaled; a rich Text."""
    import numpy as np
    from rich.text import Text

    m = np.asarray(mat, dtype=np.float64)
    finite = m[np.isfinite(m)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scale = (hi - lo) or 1.0
    t = Text(f"{title}  [{lo:.3g} .. {hi:.3g}]\n" if title else "")
    width = max((len(s) for s in labels), default=0) if labels else 0
    for i, row in enumerate(m):
        if labels:
            t.append(labels[i][:12].rjust(min(width, 12)) + " ")
        for v in row:
            t.append("██", style=_colour((v - lo) / scale) if np.isfinite(v) else "black")
        t.append("\n")
    return t


def register(app: typer.Typer) -> None:
    """Add ``stitch`` (sub-app) and ``attention`` to the main app."""
    app.add_typer(stitch_app, name="stitch", rich_help_panel="Stitching")
    app.command("attention", rich_help_panel="Stitching")(attention)


def attention(
    model: str = typer.Argument(..., help=MODEL_HELP),
    prompt: str = typer.Option("Once upon a time", "--prompt", help="Text to look at."),
    plan: str = typer.Option("all", "--plan", "-p", help=PLAN_HELP),
    layer: int | None = typer.Option(None, "--layer", "-l", help="Plan position to show (default: the last)."),
    head: int | None = typer.Option(None, "--head", help="Head to show (default: mean over heads)."),
    out: Path | None = typer.Option(None, "--out", help="Save attn_probs.npy [pos, head, T, T], "
                                    "attn_fft.npy (log|fftshift(fft2)|) and tokens.json here."),
    fft: bool = typer.Option(True, "--fft/--no-fft", help="Also show the 2-D FFT magnitude."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the files of an earlier --out."),
) -> None:
    """Attention probabilities of one layer/head as a terminal heatmap, and their 2-D FFT (seed 002)."""
    import json

    import numpy as np
    import torch

    from lminspect.errors import UserError
    from lminspect.fsutil import check_output
    from lminspect.stitch import parse_plan

    if out is not None:
        check_output(out, kind="dir", overwrite=False, allow_nonempty=True)
        for name in ATTENTION_FILES:
            check_output(out / name, kind="file", overwrite=overwrite)
    _threads()
    _, lm, tok = _load(model)
    p = parse_plan(plan, lm.n_layers)
    ids = tok.encode(prompt)
    if not ids:
        raise UserError("empty prompt")
    if len(ids) > lm.context_length:
        raise UserError(f"prompt of {len(ids)} tokens exceeds the model's context of {lm.context_length}")
    _, acts = lm.run_with_cache(torch.tensor([ids]), sites=["attn_probs"], plan=p)
    probs = np.stack([acts[f"attn_probs.{i}"][0].float().numpy() for i in range(len(p))])  # [pos, H, T, T]
    pos = len(p) - 1 if layer is None else layer
    if not 0 <= pos < len(p):
        raise UserError(f"--layer {pos} is out of range; the plan has {len(p)} positions (0-{len(p) - 1})")
    n_head = probs.shape[1]
    if head is not None and not 0 <= head < n_head:
        raise UserError(f"--head {head} is out of range; the model has {n_head} heads (0-{n_head - 1})")
    spec = np.fft.fftshift(np.fft.fft2(probs, axes=(-2, -1)), axes=(-2, -1))
    logmag = np.log1p(np.abs(spec)).astype(np.float32)
    mat = probs[pos].mean(0) if head is None else probs[pos, head]
    fmat = logmag[pos].mean(0) if head is None else logmag[pos, head]
    labels = [tok.decode([i]).replace("\n", "\\n") for i in ids]
    what = f"plan position {pos} (layer {p[pos].index}), " + ("mean of heads" if head is None else f"head {head}")
    con = _console()
    con.print(heatmap_text(mat, f"attention probabilities: {what}", labels))
    if fft:
        con.print(heatmap_text(fmat, f"log(1+|fftshift(fft2)|): {what}"))
    if out is not None:
        from lminspect.fsutil import atomic_path, atomic_write_text

        out.mkdir(parents=True, exist_ok=True)
        for name, arr in zip(ATTENTION_FILES, (probs, logmag), strict=False):
            with atomic_path(out / name) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, arr)
        atomic_write_text(out / "tokens.json", json.dumps({"ids": ids, "tokens": labels,
                                                           "plan": [c.index for c in p]}) + "\n")
        con.print(f"[dim]saved {out}/attn_probs.npy {tuple(probs.shape)} and attn_fft.npy[/dim]")
