"""Sweeps: shared prefix-tree scoring equals separate evaluation; CLI inline plans, item logs, progress."""

from __future__ import annotations

import io
import json

import pytest
from typer.testing import CliRunner

from lminspect.cli import app
from lminspect.evals.mc import MCItem
from lminspect.evals.sweep import item_records, run_sweep
from lminspect.runtime import Progress, resolve_threads

runner = CliRunner()

ITEMS = [
    MCItem("Once upon a time there was a little model that read books.", ["It slept.", "The end of it all.", "x"], 0),
    MCItem("The weights were small but", ["the stories were long.", "a layer.", "model model model"], 2),
    MCItem("Every layer added", ["a little more meaning.", "books", "time"], 1),
]


def _mc(path):
    path.write_text("".join(json.dumps({"ctx": i.ctx, "endings": i.endings, "label": i.label}) + "\n"
                            for i in ITEMS))
    return path


def test_shared_sweep_equals_separate(tiny_llama_dir):
    from tokenizers import Tokenizer

    from lminspect.models import load_model
    from lminspect.stitch import parse_plan

    model = load_model(str(tiny_llama_dir))
    tok = Tokenizer.from_file(str(tiny_llama_dir / "tokenizer.json"))
    plans = {k: parse_plan(v, 4) for k, v in {"all": "all", "cut": "0-2", "rep": "0-1,1,2-3", "odd": "odd"}.items()}
    seen = []
    shared = run_sweep(model, tok, ITEMS, plans, batch_size=2, progress=lambda d, n: seen.append((d, n)))
    alone = run_sweep(model, tok, ITEMS, plans, batch_size=2, separate=True)
    for name in plans:
        assert [s.lls for s in shared.results[name].items] == [s.lls for s in alone.results[name].items]
    assert shared.calls_named == alone.calls_run == 2 * (4 + 3 + 5 + 2)
    assert shared.calls_run == 2 * (4 + 3 + 2)  # 0-3 | 3 after 0-2 is shared | 1,2,3 after 0-1 | 1,3
    assert "layer calls run of" in shared.summary()
    assert seen[-1] == (len(ITEMS) * len(plans), len(ITEMS) * len(plans))
    rec = item_records(ITEMS, shared.results["cut"], "cut")[1]
    assert rec["plan"] == "cut" and rec["n_chars"] == [len(e) for e in ITEMS[1].endings] and rec["label"] == 2
    assert len(rec["lls"]) == 3 and rec["n_bytes"] == rec["n_chars"]


def test_cli_sweep_inline_plans_log_items_and_summary(tiny_llama_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LMINSPECT_PROGRESS_EVERY", "0")  # a plain progress line per batch (not a terminal)
    mc = _mc(tmp_path / "mc.jsonl")
    log = tmp_path / "items.jsonl"
    args = ["stitch", "sweep", str(tiny_llama_dir), "--eval", str(mc), "--plan", "cut=0-2", "--plan",
            "rep=0-1,1r2,2-3", "--log-items", str(log), "--out", str(tmp_path / "res"), "--threads", "1",
            "--batch-size", "2"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "cut" in r.output and "rep" in r.output and "±" in r.output
    assert "layer calls run of" in r.output and "1 thread" in r.output and "1 threads" not in r.output
    assert "sweep: 4/6 item x plan" in r.output and "sweep: 6/6 item x plan" in r.output and "ETA" in r.output
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["plan"] for x in recs] == ["cut"] * 3 + ["rep"] * 3
    data = json.loads(next((tmp_path / "res").glob("*.json")).read_text())
    assert [row["plan"] for row in data["rows"]] == ["cut", "rep"] and data["complete"]
    assert data["calls_run"] < data["calls_named"] and "acc_stderr" in data["rows"][0]
    r = runner.invoke(app, args)  # the item log exists now
    assert r.exit_code == 2 and "--overwrite" in r.output


@pytest.mark.parametrize(("extra", "needle"), [
    (["--plan", "nospec"], "expected NAME=SPEC"),
    (["--plan", "x=0-99"], "--plan x:"),
    (["--batch-size", "zero"], "--batch-size 'zero'"),
    (["--threads", "0"], "--threads"),
])
def test_cli_sweep_bad_options_one_line(tiny_llama_dir, tmp_path, extra, needle):
    r = runner.invoke(app, ["stitch", "sweep", str(tiny_llama_dir), "--eval", str(_mc(tmp_path / "mc.jsonl")),
                            "--out", str(tmp_path), *extra])
    assert r.exit_code == 2 and needle in r.output, r.output
    assert "Traceback" not in r.output


def test_plain_progress_lines_and_threads_env(monkeypatch):
    buf = io.StringIO()
    p = Progress("sweep", 4, "items", stream=buf, every=0)
    for k in range(1, 5):
        p.update(k)
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("sweep: 1/4 items") and "ETA" in lines[0] and lines[-1].startswith("sweep: 4/4")
    monkeypatch.setenv("LMINSPECT_THREADS", "3")
    assert resolve_threads() == 3 and resolve_threads(2) == 2
    monkeypatch.delenv("LMINSPECT_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert resolve_threads() >= 1


def test_sweep_under_torchrun_matches_one_process(tiny_llama_dir, tmp_path, torchrun):
    """Two gloo processes through the real torchrun: items sharded, gathered on rank 0, same scores."""
    mc = _mc(tmp_path / "mc.jsonl")
    common = ["stitch", "sweep", str(tiny_llama_dir), "--eval", str(mc), "--plan", "all=all", "--plan", "cut=0-2",
              "--batch-size", "1", "--threads", "1"]
    one = runner.invoke(app, [*common, "--out", str(tmp_path / "one"), "--log-items", str(tmp_path / "one.jsonl")])
    assert one.exit_code == 0, one.output
    r = torchrun(["-m", "lminspect", *common, "--out", str(tmp_path / "two"), "--log-items",
                  str(tmp_path / "two.jsonl")])
    assert r.returncode == 0, r.stderr[-2000:]
    a = [json.loads(x) for x in (tmp_path / "one.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert [(x["plan"], x["id"]) for x in a] == [(x["plan"], x["id"]) for x in b]
    for x, y in zip(a, b, strict=True):
        assert x["lls"] == pytest.approx(y["lls"], abs=1e-6) and x["pred_norm"] == y["pred_norm"]
    data = json.loads(next((tmp_path / "two").glob("*.json")).read_text())
    assert data["world_size"] == 2 and len(list((tmp_path / "two").glob("*.json"))) == 1
