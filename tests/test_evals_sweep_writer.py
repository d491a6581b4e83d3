"""evals.sweep.SweepWriter: every finished plan on disk as it finishes (CLI and REPL), so Ctrl-C in a
shared sweep keeps the finished plans; evals.datasets.mc_items: one way to name a set."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from lminspect.cli import app
from lminspect.evals.mc import MCItem

ITEMS = [
    MCItem("Once upon a time there was a little model that read books.", ["It slept.", "The end of it all.", "x"], 0),
    MCItem("The weights were small but", ["the stories were long.", "a layer.", "model model model"], 2),
]


def _mc(path):
    path.write_text("".join(json.dumps({"ctx": i.ctx, "endings": i.endings, "label": i.label}) + "\n" for i in ITEMS))
    return path


def test_ctrl_c_in_a_shared_sweep_keeps_the_finished_plans(tiny_llama_dir, tmp_path, monkeypatch):
    import lminspect.evals.perplexity as perplexity

    real, calls = perplexity.evaluate_perplexity, []

    def third_is_interrupted(*a, **kw):  # Ctrl-C while the third plan is still being measured
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(perplexity, "evaluate_perplexity", third_is_interrupted)
    text = tmp_path / "ppl.txt"
    text.write_text("Once upon a time there was a little model. It read many books.\n")
    out = tmp_path / "res"
    r = CliRunner().invoke(app, ["stitch", "sweep", str(tiny_llama_dir), "--eval", str(_mc(tmp_path / "mc.jsonl")),
                                 "--plan", "a=0-3", "--plan", "b=0-2", "--plan", "c=0,1", "--ppl-data", str(text),
                                 "--ppl-tokens", "16", "--out", str(out), "--threads", "1"])
    assert r.exit_code == 130, r.output
    [js] = out.glob("*.json")
    assert r.output.strip().splitlines()[-1] == f"lminspect: interrupted; 2 of 3 plans saved in {js}"
    meta = json.loads(js.read_text())
    assert meta["complete"] is False and [row["plan"] for row in meta["rows"]] == ["a", "b"]
    with js.with_suffix(".csv").open() as f:
        assert [row["plan"] for row in csv.DictReader(f)] == ["a", "b"]


def test_repl_sweep_writes_what_the_cli_writes(tiny_llama_dir, tmp_path):
    import lminspect as li

    res = li.open(tiny_llama_dir).sweep(ITEMS, {"all": "all", "cut": "0-2"}, out=tmp_path / "res")
    [js] = (tmp_path / "res").glob("sweep-*.json")
    meta = json.loads(js.read_text())
    assert meta["complete"] is True and [r["plan"] for r in meta["rows"]] == ["all", "cut"] == \
        [r["plan"] for r in res.rows]
    assert meta["calls_run"] == res.calls_run and res.table().columns[0] == "plan"


def test_one_way_to_name_a_set(tmp_path):
    from lminspect.evals.datasets import DEFAULT_LIMIT, mc_items

    assert len(mc_items("cloze")) == DEFAULT_LIMIT and len(mc_items("cloze", limit=3)) == 3
    assert [i.ctx for i in mc_items(_mc(tmp_path / "mc.jsonl"))] == [i.ctx for i in ITEMS]
    assert mc_items(ITEMS, limit=1) == ITEMS[:1]
    with pytest.raises(Exception, match="not found"):
        mc_items(tmp_path / "missing.jsonl")
