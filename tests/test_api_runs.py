"""li.runs / li.experiments / li.activations, and the `lminspect repl` plain path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import pytest

import lminspect as li
from lminspect.errors import UserError


def _write_run(d, name, losses, status="done"):
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"name": name, "experiment": name, "status": status, "n_params": 10}))
    rows = [{"step": i + 1, "tokens": 100 * (i + 1), "loss": v, "acc": 0.1 * i, "tok_s": 1000.0,
             **({"val_loss": v + 0.1} if i % 2 else {})} for i, v in enumerate(losses)]
    (d / "stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture()
def runs_dir(tmp_path):
    _write_run(tmp_path / "runs" / "base", "base", [5.0, 4.0, 3.0, 2.5, 2.2, 2.0])
    _write_run(tmp_path / "runs" / "nested" / "exp", "exp", [5.0, 3.8, 2.9, 2.3])
    (tmp_path / "runs" / "junk").mkdir()
    return tmp_path / "runs"


def test_runs_collection(runs_dir):
    rs = li.runs(runs_dir)
    assert len(rs) == 2 and sorted(rs.names) == ["base", "nested/exp"]  # a nested run keeps its folder
    assert rs["exp"].name == "nested/exp" and rs[0].name in ("base", "nested/exp")
    tab = rs.table()
    rows = {r["name"]: r for r in tab.to_list()}
    assert rows["base"]["steps"] == 6 and rows["base"]["tokens"] == 600 and rows["base"]["loss"] == 2.0
    assert rows["nested/exp"]["exp"] == "exp" and rows["base"]["best_val_loss"] == pytest.approx(2.1)
    assert "base" in repr(rs) and "best_val_loss" in repr(rs)
    fig = rs.plot(width=80, height=20)
    assert "base" in repr(fig) and "exp" in str(fig) and "\x1b[" not in fig.text
    d = rs.diff(baseline="base", width=80, height=20)
    assert "baseline" in d.text and "base" in d.text
    assert "baseline" in rs.diff().text  # default baseline: the longest run
    assert len(li.runs(runs_dir / "base")) == 1
    assert len(li.runs(runs_dir / "base", runs_dir / "nested")) == 2
    with pytest.raises(KeyError):
        rs["nope"]
    with pytest.raises(UserError, match="baseline"):
        rs.diff(baseline="nope")


def test_runs_errors(tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        li.runs(tmp_path / "missing")
    with pytest.raises(UserError, match="no run directories"):
        li.runs(tmp_path)


def test_experiments_table():
    tab = li.experiments(load_plugins=False)
    names = tab["name"]
    assert "gpt2ish" in names and "llamaish" in names
    assert "summary" in tab.columns and "gpt2ish" in repr(tab)


def test_activations_delegates(monkeypatch, tmp_path):
    fake = types.ModuleType("lminspect.activations")
    fake.load = lambda path, **kw: ("loaded", str(path), kw)
    monkeypatch.setitem(sys.modules, "lminspect.activations", fake)
    assert li.activations(tmp_path, sites=["x"]) == ("loaded", str(tmp_path), {"sites": ["x"]})


def test_activations_name_survives_subpackage_import(tmp_path):
    import importlib

    import lminspect

    fn = lminspect.activations  # may already be the (callable) subpackage
    importlib.import_module("lminspect.activations")
    assert callable(lminspect.activations) and callable(fn)
    with pytest.raises(UserError):
        lminspect.activations(tmp_path / "missing")
    assert hasattr(lminspect.activations, "collect")
    importlib.import_module("lminspect.experiments")  # same for li.experiments()
    assert "gpt2ish" in [r["name"] for r in lminspect.experiments(load_plugins=False).to_list()]


def test_lazy_names():
    import lminspect

    for name in ("open", "Model", "runs", "experiments", "activations", "Table", "quick_model"):
        assert name in dir(lminspect) and getattr(lminspect, name) is not None


def _run_cli(args, stdin, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LMINSPECT_CACHE": os.environ.get("LMINSPECT_CACHE", "")}
    if not env["LMINSPECT_CACHE"]:
        env.pop("LMINSPECT_CACHE")
    return subprocess.run([sys.executable, "-m", "lminspect", *args], input=stdin, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env)


def test_repl_plain_piped(tmp_path):
    d = li.quick_model(tmp_path / "qm")
    script = "print(m)\nprint(m.layers[1].attn.q.heads().shape)\nprint(type(li.runs).__name__)\n"
    p = _run_cli(["repl", str(d)], script, tmp_path)
    assert p.returncode == 0, p.stderr
    assert "Model qm (llama" in p.stdout and "(4, 16, 64)" in p.stdout and "function" in p.stdout
    assert "`m` is qm" in p.stderr  # the banner
    p = _run_cli(["repl", str(d)], 'm["nope"]\nprint("still here")\n1/0\n', tmp_path)
    assert p.returncode == 0 and "still here" in p.stdout
    assert "lminspect: error:" in p.stderr and "no tensor named 'nope'" in p.stderr
    assert "ZeroDivisionError" in p.stderr and "code.py" not in p.stderr


def test_repl_without_model_and_bad_model(tmp_path):
    p = _run_cli(["repl"], "print(li.__name__)\n", tmp_path)
    assert p.returncode == 0 and "lminspect" in p.stdout
    p = _run_cli(["repl", str(tmp_path / "missing")], "", tmp_path)
    assert p.returncode == 2 and "lminspect: error:" in p.stderr and "Traceback" not in p.stderr


def test_one_run_dir_rule_for_repl_tui_and_plots(tmp_path, tiny_llama_dir):
    """A model directory's config.json does not make it a run: li.runs, the TUI's run list and load_run agree."""
    from lminspect.train.runlog import is_run_dir, load_run
    from lminspect.tui.backend import find_runs

    (tmp_path / "runs").mkdir()
    model = tmp_path / "runs" / "model"
    model.mkdir()
    (model / "config.json").write_text((tiny_llama_dir / "config.json").read_text())
    run = tmp_path / "runs" / "r1"
    run.mkdir()
    (run / "config.json").write_text('{"name": "r1", "status": "done"}')
    (run / "stats.jsonl").write_text('{"step": 1, "tokens": 8, "loss": 2.0}\n')
    copied = tmp_path / "runs" / "copied"  # config.json + checkpoints/, no log
    (copied / "checkpoints").mkdir(parents=True)
    (copied / "config.json").write_text("{}")
    assert [is_run_dir(p) for p in (model, run, copied)] == [False, True, True]
    assert find_runs(tmp_path / "runs") == [copied, run]
    assert [r.path for r in li.runs(tmp_path / "runs")] == [copied, run]
    with pytest.raises(UserError, match="not a run directory"):
        load_run(model)
