"""``lminspect eval``: one model on multiple-choice sets, scored by the sweep's code (the same
numbers as ``stitch sweep``), shown as lm-eval's table, written as lm-eval's results.json."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lminspect.cli import app
from lminspect.cli.eval_cmd import results_table

runner = CliRunner()

ITEMS = [
    ("Once upon a time there was a little model that read books.", ["It slept.", "The end of it all.", "x"], 0),
    ("The weights were small but", ["the stories were long.", "a layer.", "model model model"], 2),
    ("Every layer added", ["a little more meaning.", "books", "time"], 1),
    ("The cat sat on", ["the mat.", "a cloud of numbers", "seven"], 0),
]


def _mc(path, items=ITEMS):
    path.write_text("".join(json.dumps({"ctx": c, "endings": e, "label": y}) + "\n" for c, e, y in items))
    return path


def test_table_reads_like_lm_eval():
    rows = [{"task": "cloze", "source": "lminspect cloze", "n": 50, "acc": 0.42, "acc_stderr": 0.0705,
             "acc_norm": 0.5, "acc_norm_stderr": 0.0714}]
    lines = results_table(rows).splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["Tasks", "Version", "n", "Metric", "", "Value", "",
                                                                   "Stderr"]
    assert set(lines[1]) <= {"|", "-", ":"}
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells == ["cloze", "lminspect cloze", "50", "acc", "↑", "0.4200", "±", "0.0705"]
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells == ["", "", "", "acc_norm", "↑", "0.5000", "±", "0.0714"]
    assert len({len(ln) for ln in lines}) == 1  # columns line up


def test_eval_scores_as_the_sweep_does(tiny_llama_dir, tmp_path):
    mc = _mc(tmp_path / "mc.jsonl")
    out, log = tmp_path / "eval.json", tmp_path / "items.jsonl"
    r = runner.invoke(app, ["eval", str(tiny_llama_dir), "--data", str(mc), "--plan", "0,1r2,3", "--out", str(out),
                            "--log-items", str(log), "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "|Tasks" in r.stdout and "|mc   |" in r.stdout and "file mc.jsonl" in r.stdout and "acc_norm" in r.stdout
    assert "eval of 4 items in 1 set(s)" in r.stderr and "1 thread" in r.stderr
    res = json.loads(out.read_text())["results"]["mc"]
    assert res["n"] == 4 and res["source"] == "file mc.jsonl"
    assert len(log.read_text().splitlines()) == 4
    sweep = runner.invoke(app, ["stitch", "sweep", str(tiny_llama_dir), "--eval", str(mc), "--plan", "p=0,1r2,3",
                                "--out", str(tmp_path / "sweep"), "--threads", "1"])
    assert sweep.exit_code == 0, sweep.output
    row = json.loads(next((tmp_path / "sweep").glob("*.json")).read_text())["rows"][0]
    for k in ("n", "acc", "acc_stderr", "acc_norm", "acc_norm_stderr"):
        assert res[k] == pytest.approx(row[k], abs=1e-12), k
    r = runner.invoke(app, ["eval", str(tiny_llama_dir), "--data", str(mc), "--out", str(out)])
    assert r.exit_code == 2 and "--overwrite" in r.stderr  # nothing replaced without asking


def test_two_sets_give_two_row_pairs(tiny_llama_dir, tmp_path):
    a, b = _mc(tmp_path / "a.jsonl"), _mc(tmp_path / "b.jsonl", ITEMS[:2])
    r = runner.invoke(app, ["eval", str(tiny_llama_dir), "-d", str(a), "-d", str(b), "--limit", "3"])
    assert r.exit_code == 0, r.output
    table = [ln for ln in r.stdout.splitlines() if ln.startswith("|")]
    assert len(table) == 2 + 4
    assert [ln.split("|")[3].strip() for ln in table[2::2]] == ["3", "2"]


@pytest.mark.parametrize(("extra", "needle"), [
    (["--data", "{tmp}/missing.jsonl"], "not found"),
    (["--out", "{tmp}/x.txt"], "expected a file ending in .json"),
    (["--data", "{mc}", "--data", "{mc}"], "each set once"),
    (["--limit", "0"], "--limit 0"),
    (["--plan", "0,9"], "out of range"),
    (["--batch-size", "zero"], "--batch-size 'zero'"),
])
def test_bad_input_is_one_line(tiny_llama_dir, tmp_path, extra, needle):
    mc = _mc(tmp_path / "mc.jsonl")
    extra = [x.format(tmp=tmp_path, mc=mc) for x in extra]
    if "--data" not in extra:
        extra = ["--data", str(mc), *extra]
    r = runner.invoke(app, ["eval", str(tiny_llama_dir), *extra])
    assert r.exit_code == 2, r.output
    err = r.stderr.strip()
    assert "\n" not in err and err.startswith("lminspect: error:") and needle in err, err
