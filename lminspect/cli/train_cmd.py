"""``lminspect train``, ``lminspect exp list|describe`` and ``lminspect plot``.

Only typer/rich at module level; the registry, torch and plotext load inside the commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from lminspect.cli.threads import Threads

PANEL = "Training"

exp_app = typer.Typer(help="List and describe trainable experiments (entry points).", no_args_is_help=True)


def _complete_exp(incomplete: str) -> list[str]:
    try:
        from lminspect.experiments import experiment_names

        return [n for n in [*experiment_names(), "list"] if n.startswith(incomplete)]
    except Exception:  # noqa: BLE001 - completion must never fail loudly
        return []


def _plugins_flag(no_plugins: bool) -> bool | None:
    return False if no_plugins else None


def print_experiment_list(no_plugins: bool = False, check: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    from lminspect.experiments import list_experiments

    infos = list_experiments(_plugins_flag(no_plugins), check=check)
    console = Console()
    if not console.is_terminal:
        for i in infos:
            state = ""
            if i.error:
                state = i.error.upper()[:15] + i.error[15:] if i.error.startswith("not available") \
                    else f"BROKEN: {i.error}"
            print("\t".join([i.name, f"{i.dist} {i.version}", i.summary, state]).rstrip())
        return
    table = Table(box=None, pad_edge=False)
    for col in ("experiment", "from", "description"):
        table.add_column(col)
    from rich.markup import escape

    for i in infos:  # plugin names, summaries and errors are text from outside: escaped
        desc = escape(i.summary)
        if i.error:
            desc = f"[red]broken:[/red] {escape(i.error)}" if not i.error.startswith("not available") else \
                f"[yellow]{escape(i.error)}[/yellow]"
        table.add_row(escape(i.name), escape(f"{i.dist} {i.version}"), desc)
    console.print(table)


def describe_experiment(name: str, no_plugins: bool = False) -> None:
    from lminspect.experiments import get_experiment, list_experiments

    exp = get_experiment(name, _plugins_flag(no_plugins))
    info = next((i for i in list_experiments(_plugins_flag(no_plugins)) if i.name == name), None)
    print(f"{exp.name}" + (f"  ({info.dist} {info.version})" if info else ""))
    print()
    print(exp.description.strip())
    print()
    print(f"architecture: {exp.arch}   tokenizer: {exp.tokenizer}")
    if exp.sacrificial:
        print(f"sacrificial (training-only) parameters: {', '.join(exp.sacrificial)}")
    if exp.defaults:
        print(f"training defaults: {json.dumps(exp.defaults)}")
    if exp.unavailable:
        print(f"NOT AVAILABLE: {exp.unavailable}")


@exp_app.command("list")
def exp_list(
    no_plugins: bool = typer.Option(False, "--no-plugins", help="Hide third-party plugins."),
    check: bool = typer.Option(False, "--check", help="Import every plugin and report broken ones."),
) -> None:
    """List the experiments you can train: name, where it comes from (package, version), what it is.

    Example: lminspect exp list
    """
    print_experiment_list(no_plugins, check)


@exp_app.command("describe")
def exp_describe(
    name: str = typer.Argument(..., autocompletion=_complete_exp),
    no_plugins: bool = typer.Option(False, "--no-plugins", help="Hide third-party plugins."),
) -> None:
    """Show what an experiment changes, its architecture and its training defaults.

    Example: lminspect exp describe value_norm
    """
    describe_experiment(name, no_plugins)


def _parse_sets(items: list[str]) -> dict:
    from lminspect.errors import UserError

    out = {}
    for item in items:
        key, eq, val = item.partition("=")
        if not eq or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE (e.g. --set n_layer=4)")
        try:
            out[key.strip()] = json.loads(val)
        except json.JSONDecodeError:
            out[key.strip()] = val
    return out


def _given_flags(cfg: object) -> dict:
    """TrainConfig fields whose flag the user typed (not left at its default)."""
    try:  # recent typer ships its own copy of click
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - a typer that uses click itself
        from click import get_current_context

    ctx = get_current_context(silent=True)
    if ctx is None:
        return {}
    names = {"set_": "model_args", "no_plugins": "load_plugins"}
    out = {}
    for param in ctx.params:
        src = ctx.get_parameter_source(param)
        if src is not None and src.name in ("COMMANDLINE", "ENVIRONMENT"):
            key = names.get(param, param)
            if hasattr(cfg, key):
                out[key] = getattr(cfg, key)
    return out


def train(
    exp: list[str] = typer.Option(["gpt2ish"], "--exp", "-e", autocompletion=_complete_exp,
                                  help="Experiment to train, or 'list'. Repeat it (with --run-root) to train "
                                       "several on the same data and seed."),
    describe: bool = typer.Option(False, "--describe", help="Describe the experiment and exit."),
    data: str = typer.Option(None, "--data", "-d", help="HF dataset id[:config], or a local .txt/.jsonl/.parquet "
                                                  "file or directory (default: the shipped corpus)."),
    plan: str = typer.Option(None, "--train-plan", help="Training plan (not a layer plan): built-in name or JSON "
                                                      "file."),
    plan_opt: str = typer.Option(None, "--plan", hidden=True),  # --plan is a layer plan elsewhere
    run_dir: Path = typer.Option(None, "--run-dir", help="Run directory (default runs/EXP)."),
    run_root: Path = typer.Option(None, "--run-root", help="Train each --exp into RUN_ROOT/EXP; run again to "
                                                           "resume the unfinished ones."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --run-dir from its last checkpoint."),
    init_from: str = typer.Option(None, "--init-from", help="Start from these weights (and their shape): a "
                                                            "model dir such as `lminspect grow` writes, a "
                                                            "checkpoint or a run dir."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto."),
    amp: str = typer.Option("auto", "--amp", help="none | bf16 | fp16 autocast (auto: bf16 on CUDA, none on CPU)."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", help="Sequences per optimizer step (global)."),
    mini_batch_size: int = typer.Option(None, "--mini-batch-size",
                                        help="Sequences per forward pass (gradient accumulation)."),
    lr: float = typer.Option(None, "--lr", help="Learning rate (default 6e-4, or the experiment's)."),
    lr_schedule: str = typer.Option("constant", "--lr-schedule", help="constant, cosine or linear (decay to "
                                                                      "--min-lr-ratio at the last step)."),
    warmup_steps: int = typer.Option(0, "--warmup-steps", help="Linear warmup steps before the schedule."),
    min_lr_ratio: float = typer.Option(0.1, "--min-lr-ratio", help="Final lr of cosine/linear, times --lr."),
    optimizer: str = typer.Option(None, "--optimizer", help="adagrad (lmplay's default) or adamw."),
    weight_decay: float = typer.Option(0.0, "--weight-decay"),
    grad_clip: float = typer.Option(0.0, "--grad-clip", help="Clip the gradient norm (0 = off)."),
    seq_len: int = typer.Option(256, "--seq-len", help="Tokens per training sequence."),
    max_steps: int = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps."),
    max_tokens: int = typer.Option(None, "--max-tokens", help="Stop after this many training tokens."),
    seed: int = typer.Option(0, "--seed"),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    eval_every: int = typer.Option(100, "--eval-every", help="Validate every N steps (0 = never)."),
    save_every: int = typer.Option(200, "--save-every", help="Checkpoint every N steps (0 = at the end)."),
    keep_checkpoints: int = typer.Option(2, "--keep-checkpoints", min=0,
                                         help="Checkpoints kept (older ones pruned); 0 keeps all, for "
                                              "`lminspect timeline`."),
    set_: list[str] = typer.Option([], "--set", help="Model option KEY=VALUE (e.g. n_layer=4), repeatable."),
    no_plugins: bool = typer.Option(False, "--no-plugins", help="Ignore third-party experiment plugins."),
    order_by: str = typer.Option(None, "--order-by", help="Feed training documents sorted by this "
                                                          "metadata column (e.g. ppl; needs --metadata)."),
    order: str = typer.Option(None, "--order", help="asc | desc | shuffle | shuffle-within-buckets "
                                                    "(default asc with --order-by)."),
    metadata: str = typer.Option(None, "--metadata", help="Metadata parquet from `lminspect data metadata`."),
    threads: Threads = None,
) -> None:
    """Train one experiment (or several on the same data) into a run directory; --resume continues it.

    Several --exp with --run-root train each into RUN_ROOT/EXP, one after another, on the same
    data order and seed; run the same command again to resume the ones that did not finish. It
    ends with the loss of each minus the first's (lmplay's diff plot).

    Example: lminspect train --exp gpt2ish --max-steps 200 --lr-schedule cosine --warmup-steps 20 --run-dir runs/base

    Example: lminspect train --exp gpt2ish --exp value_norm --max-steps 200 --run-root runs/cmp
    """
    from lminspect.cli.aliases import renamed
    from lminspect.errors import UserError
    from lminspect.runtime import set_threads

    plan = renamed(plan, plan_opt, "train --plan", "--train-plan")
    common_threads = set_threads(threads)
    if exp == ["list"]:
        print_experiment_list(no_plugins)
        return
    if describe:
        for name in exp:
            describe_experiment(name, no_plugins)
        return
    from lminspect.experiments import get_experiment

    if len(exp) != len(set(exp)):
        raise UserError(f"--exp: each experiment once ({', '.join(exp)})")
    if len(exp) > 1 and run_root is None:
        raise UserError("several --exp train into one folder each: give --run-root DIR")
    if run_root is not None and (run_dir is not None or resume):
        raise UserError("--run-root names each run dir (RUN_ROOT/EXP) and resumes unfinished runs by itself: "
                        "drop --run-dir / --resume")
    for name in exp:
        get_experiment(name, _plugins_flag(no_plugins))  # unknown names fail before anything is written
    from lminspect.validate import train_paths

    train_paths([run_dir or Path("runs") / exp[0]] if run_root is None else [run_root / e for e in exp], init_from,
                run_root)
    common = dict(
        data=data, plan=plan, device=device, amp=amp, batch_size=batch_size, mini_batch_size=mini_batch_size,
        lr=lr, lr_schedule=lr_schedule, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio, init_from=init_from,
        optimizer=optimizer, weight_decay=weight_decay, grad_clip=grad_clip, seq_len=seq_len,
        max_steps=max_steps, max_tokens=max_tokens, seed=seed, compile=compile, eval_every=eval_every,
        save_every=save_every, model_args=_parse_sets(set_), load_plugins=_plugins_flag(no_plugins),
        keep_checkpoints=keep_checkpoints, order_by=order_by, order=order, metadata=metadata,
    )
    if run_root is None:
        _train_one(exp[0], run_dir, resume, common, common_threads)
    else:
        _train_batch(exp, run_root, common, common_threads)


def _before_first_step(run_dir: Path) -> str:
    """What Ctrl-C during the set-up (model, data) leaves: at most the run dir's config.json."""
    from lminspect.runtime import NOTHING_WRITTEN

    if (run_dir / "config.json").exists():
        return (f"before the first step; {run_dir} holds its config.json, no checkpoint; "
                f"continue with: lminspect train --run-dir {run_dir} --resume")
    return NOTHING_WRITTEN


def _train_one(exp: str, run_dir: Path | None, resume: bool, common: dict, n_threads: int,
               again: str = "") -> object:
    """One run (the classic ``train``): train, print where it ended, exit 130 with one line when
    interrupted (``again`` says how to continue; by default ``--resume`` on the run dir)."""
    from lminspect.distributed import is_main
    from lminspect.runtime import interrupted, interrupted_line, threads_label
    from lminspect.train import TrainConfig
    from lminspect.train.runner import run_dir_of, train_run

    cfg = TrainConfig(exp=exp, run_dir=str(run_dir) if run_dir else None, resume=resume, **common)
    rd = run_dir_of(cfg)
    with interrupted(lambda: _before_first_step(rd)):  # the library owns the run dir (lock, leftovers, resume)
        result = train_run(cfg, given=_given_flags(cfg))  # (Ctrl-C during the steps is caught inside)
    if not is_main():
        return result
    last = f"loss {result.losses[-1]:.4f}" if result.losses else "no steps run"
    if result.status == "interrupted":
        ck = result.checkpoint
        saved = f"checkpoint {Path(ck).name} saved in {result.run_dir}" if ck else "no checkpoint saved yet"
        again = again or f"continue with: lminspect train --run-dir {result.run_dir} --resume"
        print(interrupted_line(f"at step {result.step}; {saved}; {again}"), file=sys.stderr)
        raise typer.Exit(130)
    print(f"{result.run_dir}: step {result.step}, {result.tokens} tokens, {last}; checkpoint {result.checkpoint}; "
          f"{threads_label(n_threads)}")
    return result


def _train_batch(exps: list[str], root: Path, common: dict, n_threads: int) -> None:
    """Each experiment into ROOT/EXP on the same data and seed: finished runs are skipped, started
    ones resumed; then the diff plot of every run against the first."""
    from lminspect.distributed import is_main
    from lminspect.train.runner import batch_stage

    for name in exps:
        rd = root / name
        stage = batch_stage(rd, max_steps=common.get("max_steps"), max_tokens=common.get("max_tokens"))
        if stage == "finished":
            print(f"{rd}: already finished, skipped")
            continue
        if stage == "resume":
            print(f"{rd}: resuming", file=sys.stderr)
        _train_one(name, rd, stage == "resume", common, n_threads,
                   again="the batch stopped: run the same command again to resume it")
    if is_main():
        _print_batch_diff(root, exps)


def _print_batch_diff(root: Path, exps: list[str]) -> None:
    import shutil

    from lminspect.plots import plot_runs
    from lminspect.train.runlog import load_run

    runs = [load_run(root / e) for e in exps]
    size = shutil.get_terminal_size((100, 30))
    color = sys.stdout.isatty()
    if len(runs) > 1:
        print(plot_runs(runs, "loss", diff=True, baseline=runs[0], width=min(size.columns, 120), height=22,
                        color=color))
    print(f"lminspect plot {' '.join(str(r.path) for r in runs)} --diff --baseline {exps[0]}   (to redraw)")


SAVE_HELP = "Also save the figure as PNG or SVG (by the suffix; needs the \\[figures] extra)."


def plot(
    runs: list[Path] = typer.Argument(..., help="Run directories (with stats.jsonl), or folders of runs "
                                      "(runs/ plots every run under it, up to 3 levels down)."),
    metric: str = typer.Option("loss", "--metric", help="loss, acc, val_loss, val_acc, lr, grad_norm, tok_s."),
    metric_opt: str = typer.Option(None, "-m", hidden=True),  # -m is --model elsewhere
    diff: bool = typer.Option(False, "--diff", help="Plot each run minus the baseline."),
    baseline: str = typer.Option(None, "--baseline", help="Baseline run (default: the one with the most tokens)."),
    smooth_n: int = typer.Option(0, "--smooth", help="Centred smoothing half-width in rows."),
    x: str = typer.Option("tokens", "--x", help="tokens, steps, time or flops."),
    log: bool = typer.Option(False, "--log", help="Plot log10 of the values."),
    out: Path = typer.Option(None, "--out", "-o", help="File: the figure as plain text."),
    save: Path = typer.Option(None, "--save", help=SAVE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out or --save file."),
    width: int = typer.Option(None, "--width"),
    height: int = typer.Option(None, "--height"),
    saturation: bool = typer.Option(False, "--saturation", help="Per checkpoint, side by side: loss, accuracy "
                                                                "and the mean metadata of the data seen so far."),
) -> None:
    """Plot training curves of runs in the terminal; --diff against a baseline, --save keeps a PNG/SVG.

    Example: lminspect plot runs/base runs/vn --diff --x flops --save diff.png
    """
    import shutil

    from lminspect import figures
    from lminspect.cli.aliases import renamed

    metric = renamed(metric, metric_opt, "-m", "--metric", "loss")
    from lminspect.fsutil import atomic_write_text, check_output
    from lminspect.plots import curve_data, lines_figure, plot_saturation, saturation_data

    if out is not None:
        check_output(out, kind="file", overwrite=overwrite, inputs=tuple(runs))
    if save is not None:
        figures.check_figure_path(save, overwrite, tuple(runs))
    from lminspect.validate import count

    count("--smooth", smooth_n, minimum=0)
    count("--width", width, minimum=20, maximum=2000)
    count("--height", height, minimum=5, maximum=1000)
    from lminspect.errors import UserError

    loaded = _load_runs(runs)
    if diff and len(loaded) < 2:
        raise UserError("--diff plots each run minus a baseline: give at least two runs")
    if saturation and not any(len(r) for r in loaded):
        raise UserError(f"--saturation: {', '.join(map(str, runs))} has no logged steps yet; nothing to draw")
    warnings = []  # plot what is finite, and say (after the figure) what was left out
    for r in loaded:
        dropped = r.nonfinite.get(metric, 0)
        if dropped or r.skipped:
            what = [f"{dropped} non-finite {metric} value(s)"] if dropped else []
            what += [f"{r.skipped} unreadable line(s) of stats.jsonl"] if r.skipped else []
            warnings.append(f"lminspect: warning: {r.path}: left out {' and '.join(what)}")
    size = shutil.get_terminal_size((100, 30))
    w = width or size.columns
    h = height or max(10, size.lines - 4)
    color = out is None and sys.stdout.isatty()
    if saturation:
        metrics = [m for m in metric.split(",") if m] if metric != "loss" else None
        text = plot_saturation(loaded, metrics=metrics, x=x, smooth_n=smooth_n, width=w, height=h, color=color)
        if save is not None:
            panels = saturation_data(loaded, metrics=metrics, x=x, smooth_n=smooth_n)
            figures.save_panels(save, [(d.title, d.series) for d in panels], xlabel=panels[0].xlabel,
                                overwrite=overwrite)
    else:
        d = curve_data(loaded, metric, x=x, diff=diff, baseline=baseline, smooth_n=smooth_n, log=log)
        text = lines_figure(d.series, title=d.title, xlabel=d.xlabel, width=w, height=h, color=color)
        if save is not None:
            figures.save_lines(save, d.series, title=d.title, xlabel=d.xlabel, ylabel=d.ylabel, overwrite=overwrite)
    if out is not None:
        atomic_write_text(out, text + "\n")
        print(f"wrote {out}")
    else:
        print(text)
    if save is not None:
        print(f"saved {save}", file=sys.stderr)
    for w in warnings:
        print(w, file=sys.stderr)


def _load_runs(paths: list[Path]) -> list:
    """``plot``'s runs: each path a run, or a folder of runs (every run under it, named by its
    path from there, and said on stderr so the figure's lines are accounted for)."""
    from lminspect.errors import UserError
    from lminspect.rundir import find_runs, is_run_dir
    from lminspect.train.runlog import load_run

    loaded = []
    for p in paths:
        log = p / "stats.jsonl"
        if is_run_dir(p) or not p.is_dir() or log.exists() or log.is_symlink():
            loaded.append(load_run(p))  # a run, or not one: load_run says what it is (a FIFO log, ...)
            continue
        hits = find_runs(p)
        if not hits:
            raise UserError(f"{p}: not a run directory, and no run (with stats.jsonl) under it")
        print(f"plot: {len(hits)} run{'s' * (len(hits) != 1)} under {p}: {', '.join(lab for _, lab in hits)}",
              file=sys.stderr)
        for path, label in hits:
            run = load_run(path)
            run.name = label
            loaded.append(run)
    return loaded


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("train", rich_help_panel=PANEL)(train)
    app.command("plot", rich_help_panel=PANEL)(plot)
    app.add_typer(exp_app, name="exp", rich_help_panel=PANEL)
