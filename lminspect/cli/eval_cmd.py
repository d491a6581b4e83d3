"""``lminspect eval MODEL --data SET``: one model (or one layer plan of it) on multiple-choice sets,
as a table that reads like lm-eval's. The scoring is the sweep's (``evals.sweep.run_sweep`` with one
plan); the sets come from the one registry (``evals.datasets.mc_items``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from lminspect.cli.stitch_cmd import MODEL_HELP, PLAN_HELP
from lminspect.cli.threads import Threads

DATA_HELP = ("Multiple-choice set (repeatable, one table row pair each): 'cloze' (built from the shipped corpus), "
             "a .jsonl/.json/.parquet file (HellaSwag format or `lminspect data make-mc` output) or a HF dataset id.")


def task_name(data: str) -> str:
    """The Tasks column: a named set as named, a file by its stem, a hub id as given."""
    from lminspect.evals.datasets import NAMED

    if data in NAMED:
        return data
    p = Path(data)
    return p.stem if p.exists() else data.removeprefix("hf:")


def task_source(data: str, split: str | None) -> str:
    """The Version/source column: what the items are, so two tables can be told apart."""
    from lminspect.evals.datasets import NAMED

    if data in NAMED:
        return f"lminspect {data}"
    p = Path(data)
    if p.exists():
        return f"file {p.name}"
    return f"hf {data.removeprefix('hf:')} ({split or 'validation'})"


def results_table(rows: list[dict[str, Any]]) -> str:
    """lm-eval's markdown table: a row per metric (acc, acc_norm) of each task, value ± stderr."""
    head = ["Tasks", "Version", "n", "Metric", "", "Value", "", "Stderr"]
    body = []
    for r in rows:
        for k, metric in enumerate(("acc", "acc_norm")):
            body.append([r["task"] if k == 0 else "", r["source"] if k == 0 else "", str(r["n"]) if k == 0 else "",
                         metric, "↑", f"{r[metric]:.4f}", "±", f"{r[metric + '_stderr']:.4f}"])
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    right = {2, 5, 7}

    def line(cells: list[str]) -> str:
        return "|" + "|".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in
                              enumerate(zip(cells, widths, strict=True))) + "|"

    rule = "|" + "|".join(("-" * (w - 1) + ":") if i in right else "-" * w for i, w in enumerate(widths)) + "|"
    return "\n".join([line(head), rule, *(line(b) for b in body)])


def eval_command(
    model: str = typer.Argument(..., help=MODEL_HELP),
    data: list[str] = typer.Option(["cloze"], "--data", "-d", help=DATA_HELP),
    plan: str | None = typer.Option(None, "--plan", "-p", help=PLAN_HELP + " Default: the whole model."),
    limit: int | None = typer.Option(None, "--limit", help="Items per set (default: all of a file or hub set, "
                                     "50 of 'cloze')."),
    split: str | None = typer.Option(None, "--split", help="Dataset split of a HF set (default validation)."),
    batch_size: str = typer.Option("auto", "--batch-size", "-b", help="Items per forward, or 'auto'."),
    out: Path | None = typer.Option(None, "--out", "-o", help="File (.json): the results, as lm-eval's "
                                    "results.json (results per task, the settings)."),
    log_items: Path | None = typer.Option(None, "--log-items", help="Also write per-item results (jsonl: task, "
                                          "id, per-ending log-likelihoods, lengths, choices, label)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out or --log-items file."),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16."),
    threads: Threads = None,
) -> None:
    """Evaluate one model on multiple-choice sets: acc and acc_norm with lm-eval's standard errors,
    as lm-eval prints them (acc_norm: the log-likelihood per character of each ending).

    Example: lminspect eval smollm2 --data cloze --limit 50

    Example: lminspect eval smollm2 -d cloze -d hellaswag.jsonl --plan 0-23,27-29 --out eval.json
    """
    from lminspect.stitch.plans import check_plan_early

    check_plan_early(plan)  # a typo is one line at once, before torch and the model load
    import json
    import time

    from lminspect.errors import UserError
    from lminspect.fsutil import check_output
    from lminspect.runtime import Progress, interrupted, nice_count, run_summary, set_threads, threads_label
    from lminspect.validate import count, plan_given

    inputs = (model, *data, plan)
    if out is not None:
        if out.suffix.lower() != ".json":
            raise UserError(f"--out {out}: expected a file ending in .json")
        check_output(out, kind="file", overwrite=overwrite, inputs=inputs)
    if log_items is not None:
        check_output(log_items, kind="file", overwrite=overwrite, option="--log-items", inputs=inputs)
    if len(set(data)) != len(data):
        raise UserError(f"--data: each set once ({', '.join(data)})")
    count("--limit", limit)
    plan_given(plan)
    from lminspect.cli.stitch_cmd import _load, parse_batch_size

    bs = parse_batch_size(batch_size)
    n_threads = set_threads(threads)
    t0 = time.perf_counter()
    from lminspect.evals.datasets import mc_items
    from lminspect.evals.sweep import item_records, run_sweep
    from lminspect.stitch import parse_plan, plan_to_string

    sets = {d: mc_items(d, limit=limit, split=split) for d in data}  # a bad set fails before the model loads
    _, lm, tok = _load(model, dtype)
    layers = parse_plan(plan or "all", lm.n_layers)
    plan_text = plan_to_string(layers, lm.n_layers)
    total = sum(len(items) for items in sets.values())

    def quick(seconds: float) -> str:
        return f"--limit {nice_count(max(len(i) for i in sets.values()) * 60 / seconds)} for a quick look"

    rows, logs, done = [], [], 0
    with interrupted(), Progress("eval", total, "items", quick=quick, threads=n_threads) as prog:
        for d, items in sets.items():
            res = run_sweep(lm, tok, items, {plan_text: layers}, batch_size=bs,
                            progress=lambda k, _n, base=done: prog.update(base + k))
            done += len(items)
            row = res.rows[0]
            rows.append({"task": task_name(d), "source": task_source(d, split), "data": d, "n": row["n"],
                         **{k: row[k] for k in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr")},
                         "seconds": round(res.seconds, 3)})
            logs += [{"task": rows[-1]["task"], **rec} for rec in item_records(items, res.results[plan_text])]
    if len({r["task"] for r in rows}) != len(rows):
        for r in rows:
            r["task"] = r["data"]  # two files of one stem: the full names tell them apart
    print(f"{model} (plan: {plan_text}), limit: {limit}, batch_size: {batch_size}, {threads_label(n_threads)}")
    print(results_table(rows))
    from lminspect.fsutil import atomic_write_text

    if out is not None:
        doc = {"results": {r["task"]: {k: v for k, v in r.items() if k != "task"} for r in rows},
               "config": {"model": model, "plan": plan_text, "limit": limit, "split": split, "dtype": dtype,
                          "batch_size": batch_size, "threads": n_threads}}
        atomic_write_text(out, json.dumps(doc, indent=2) + "\n")
    if log_items is not None:
        atomic_write_text(log_items, "".join(json.dumps(rec) + "\n" for rec in logs))
    wrote = ", ".join(str(p) for p in (out, log_items) if p is not None)
    print(run_summary(f"eval of {total} items in {len(rows)} set(s)", n_threads, t0) + (f"; wrote {wrote}" if wrote
                                                                                         else ""), file=sys.stderr)


def register(app: typer.Typer) -> None:
    """Add ``eval`` to the main app."""
    app.command("eval", rich_help_panel="Evaluation")(eval_command)
