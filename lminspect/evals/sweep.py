"""A sweep: many layer plans scored on one multiple-choice set (seed 002's table), sharing work.

``run_sweep`` scores every plan on the same items. By default all plans go through one prefix
tree of their layer calls per batch of items (``evals.mc_batch``): a call that several plans
share at the same place in their sequence runs once, and the reported ``calls_run`` /
``calls_named`` say how much that saved. ``separate=True`` evaluates the plans one after the
other (same batches, so the same scores to the bit), each row with its own time; shared, a row's
time is attributed: each shared layer call's time split evenly between the plans that share it.

The CLI (``stitch sweep``), the REPL (``Model.sweep``) and sessions all call this.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lminspect.distributed import gather_in_order, join, shard, sum_over_ranks
from lminspect.errors import UserError
from lminspect.evals.mc import MCItem, MCResult, make_encoder, mc_result
from lminspect.models.layercall import LayerCall

if TYPE_CHECKING:  # annotations only
    from lminspect.models.common import LM


@dataclass
class SweepResult:
    rows: list[dict[str, Any]]  # one per plan, in the plans' order (what the table and CSV show)
    results: dict[str, MCResult]  # per plan, with per-item scores
    calls_run: int  # decoder-layer calls actually run, all batches
    calls_named: int  # layer calls the plans name, all batches (what separate evaluations run)
    seconds: float
    cpu_seconds: float
    separate: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def calls_saved(self) -> float:
        return 1 - self.calls_run / self.calls_named if self.calls_named else 0.0

    def summary(self) -> str:
        """One line: plans x items, layer calls run of named, time."""
        n = self.rows[0]["n"] if self.rows else 0
        return (f"{len(self.rows)} plans x {n} items: {self.calls_run} layer calls run of {self.calls_named} named "
                f"({self.calls_saved:.0%} shared), {self.seconds:.1f} s ({self.cpu_seconds:.1f} CPU s)")


def _row(name: str, plan: list[LayerCall], res: MCResult, model: LM, seconds: float | None) -> dict[str, Any]:
    from lminspect.stitch import describe_plan

    summary = describe_plan(plan, model.n_layers, model=model)
    return {
        "plan": name, "spec": summary.text, "layers_run": summary.calls,
        "params_touched": round(summary.params_touched, 4), "n": res.n,
        "acc": res.acc, "acc_stderr": res.acc_stderr, "acc_norm": res.acc_norm,
        "acc_norm_stderr": res.acc_norm_stderr, "acc_bytes": res.acc_bytes,
        "seconds": None if seconds is None else round(seconds, 3), "ppl": None,
    }


def _score_local(model: LM, tokenizer: Any, items: Sequence[MCItem], plans: dict[str, list[LayerCall]],
                 batch_size: int | None, separate: bool, bos: int | None,
                 progress: Callable[[int, int], None] | None) -> tuple[dict[str, list[list[float]]], list[Any],
                                                                        dict[str, float | None], int, int]:
    """Per plan, per item lls of these items; n_tok per item; per-plan seconds; calls run and named."""
    from lminspect.evals.mc import _checked_requests
    from lminspect.evals.mc_batch import make_request, score_requests

    total = len(items) * len(plans)
    encode = make_encoder(tokenizer)
    reqs = [_checked_requests(model, encode, it, bos) for it in items]
    n_tok = [[len(c) for _, c in r] for r in reqs]
    batch_reqs = [make_request(r, f"item {it.id or k}") for k, (it, r) in enumerate(zip(items, reqs, strict=True))]
    if not separate:
        step = (lambda d, n: progress(d * len(plans), total)) if progress else None
        out, st = score_requests(model, batch_reqs, plans, batch_size=batch_size, progress=step)
        return out, n_tok, {name: st.plan_seconds.get(name, 0.0) for name in plans}, st.calls_run, st.calls_named
    out, secs, calls = {}, {}, 0
    for k, (name, plan) in enumerate(plans.items()):
        step = (lambda d, n, k=k: progress(k * len(items) + d, total)) if progress else None
        one, st = score_requests(model, batch_reqs, {name: plan}, batch_size=batch_size, progress=step)
        out[name], secs[name] = one[name], st.seconds
        calls += st.calls_run
    return out, n_tok, secs, calls, calls


def run_sweep(model: LM, tokenizer: Any, items: Sequence[MCItem], plans: dict[str, list[LayerCall]], *,
              batch_size: int | None = None, separate: bool = False, bos: int | None = None,
              progress: Callable[[int, int], None] | None = None,
              ppl_texts: Sequence[str] | None = None, ppl_tokens: int = 4096,
              on_row: Callable[[dict[str, Any]], None] | None = None) -> SweepResult:
    """Score every plan on ``items``; ``progress(done, total)`` counts item x plan units.

    Under torchrun the items are sharded across the processes (item i on rank i % world) and
    every rank ends with all scores in item order, identical to one process; layer-call counts
    and CPU seconds are summed over ranks."""
    if not plans:
        raise UserError("no plans to sweep")
    t0, c0 = time.perf_counter(), time.process_time()
    rank, world, _ = join(str(getattr(model, "device", "cpu")))
    mine = shard(len(items), rank, world)
    lls, n_tok, secs, calls_run, calls_named = _score_local(
        model, tokenizer, [items[i] for i in mine], plans, batch_size, separate, bos, progress)
    cpu = time.process_time() - c0
    if world > 1:
        rows_local = [[lls[name][k] for name in plans] for k in range(len(mine))]
        full = gather_in_order(mine, list(zip(rows_local, n_tok, strict=True)), len(items), world)
        lls = {name: [row[j] for row, _ in full] for j, name in enumerate(plans)}
        n_tok = [nt for _, nt in full]
        calls_run, calls_named, cpu = sum_over_ranks([calls_run, calls_named, cpu], world)
        calls_run, calls_named = int(calls_run), int(calls_named)
    results: dict[str, MCResult] = {}
    rows: list[dict[str, Any]] = []
    for name, plan in plans.items():
        res = mc_result(items, lls[name], n_tok, seconds=secs[name], cpu_seconds=cpu,
                        tokens=0, layer_calls=calls_run)
        results[name] = res
        rows.append(_row(name, plan, res, model, secs[name]))
        _ppl(model, tokenizer, rows[-1], plan, ppl_texts, ppl_tokens, on_row)
    return SweepResult(rows, results, calls_run, calls_named, time.perf_counter() - t0, cpu, separate,
                       {"world_size": world})


def _ppl(model: LM, tokenizer: Any, row: dict[str, Any], plan: list[LayerCall], texts: Sequence[str] | None,
         max_tokens: int, on_row: Callable[[dict[str, Any]], None] | None) -> None:
    if texts is not None:
        from lminspect.evals.perplexity import evaluate_perplexity

        pr = evaluate_perplexity(model, tokenizer, texts, plan=plan, max_tokens=max_tokens,
                                 eos=getattr(tokenizer, "eos_id", None))
        row["ppl"] = round(pr.ppl, 3)
    if on_row is not None:
        on_row(row)


class SweepWriter:
    """A sweep's results as files: ``OUT/sweep-LABEL-YYYYmmdd-HHMMSS.json`` (settings, ``complete``,
    rows) and ``.csv`` (rows), both rewritten atomically as each plan finishes (``on_row``), so
    Ctrl-C keeps every finished plan; ``finish(result)`` marks them complete with the totals.
    Under torchrun only rank 0 writes. Used by ``stitch sweep`` and ``Model.sweep(out=...)``."""

    def __init__(self, out: str | Path, label: str, meta: dict[str, Any], *, n_plans: int) -> None:
        from lminspect.distributed import is_main

        out = Path(out)
        label = label.replace("/", "_").replace("\\", "_")  # hf:ORG/NAME: one file name, not a folder
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.base = out / f"sweep-{label}-{stamp}"
        for k in range(2, 1000):  # two sweeps in one second never replace each other's files
            if not (self.json_path.exists() or self.csv_path.exists()):
                break
            self.base = out / f"sweep-{label}-{stamp}-{k}"
        self.rows: list[dict[str, Any]] = []
        self.meta = {**meta, "complete": False, "rows": self.rows}
        self.n_plans = n_plans
        self.writes = is_main()

    @property
    def json_path(self) -> Path:
        return self.base.with_name(self.base.name + ".json")

    @property
    def csv_path(self) -> Path:
        return self.base.with_name(self.base.name + ".csv")

    def on_row(self, row: dict[str, Any]) -> None:
        """``run_sweep``'s ``on_row``: keep the plan's row, on disk at once."""
        self.rows.append(row)
        if self.writes:
            self._write()

    def finish(self, res: SweepResult, **meta: Any) -> None:
        """Every plan done: the complete files, with the totals (and ``meta``)."""
        self.meta.update(meta, complete=True, calls_run=res.calls_run, calls_named=res.calls_named,
                         seconds=round(res.seconds, 3), cpu_seconds=round(res.cpu_seconds, 3))
        self.rows[:] = res.rows
        if self.writes:
            self._write()

    def saved(self) -> str:
        """What an interrupted sweep left, for the one line Ctrl-C prints."""
        if not self.rows:
            return "no plan had finished; nothing written"
        return f"{len(self.rows)} of {self.n_plans} plans saved in {self.json_path}"

    def _write(self) -> None:
        import csv
        import io

        from lminspect.fsutil import atomic_write_text

        if not self.rows:
            return
        atomic_write_text(self.json_path, json.dumps(self.meta, indent=2) + "\n")
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(self.rows[0]))
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_text(self.csv_path, buf.getvalue())


def item_records(items: Sequence[MCItem], res: MCResult, plan: str | None = None) -> list[dict[str, Any]]:
    """Per-item records for ``--log-items``: id, per-ending log-likelihoods, lengths (tokens,
    characters, bytes), the choice under each metric, the label."""
    out = []
    for k, (it, s) in enumerate(zip(items, res.items, strict=True)):
        rec: dict[str, Any] = {} if plan is None else {"plan": plan}
        rec.update({
            "id": it.id if it.id is not None else k, "lls": s.lls, "n_tokens": s.n_tokens,
            "n_chars": [len(e) for e in it.endings], "n_bytes": [len(e.encode("utf-8")) for e in it.endings],
            "pred": s.pred, "pred_norm": s.pred_norm, "pred_bytes": s.pred_bytes, "label": s.label,
            "acc": int(s.pred == s.label), "acc_norm": int(s.pred_norm == s.label),
        })
        out.append(rec)
    return out


def write_item_log(path: str | Path, items: Sequence[MCItem], results: dict[str, MCResult], *,
                   overwrite: bool = False) -> Path:
    """Every plan's per-item records as one jsonl file (written atomically)."""
    from lminspect.fsutil import atomic_write_text

    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError(f"{path} exists; pass --overwrite to replace it")
    lines = [json.dumps(rec) for name, res in results.items() for rec in item_records(items, res, name)]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
