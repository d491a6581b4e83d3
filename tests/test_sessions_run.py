"""Every script in sessions/ runs in quick mode and writes the files it promises, with sensible values."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lminspect.sessions_runner import find_sessions, run_session, session, summary

ROOT = Path(__file__).resolve().parent.parent
SESSIONS = find_sessions(ROOT / "sessions")


def _finite_numbers(obj) -> bool:
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return True
    if isinstance(obj, int | float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite_numbers(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite_numbers(v) for v in obj)
    return True


def _check_weight_structure(out: Path) -> None:
    norms = np.load(out / "layer_norms.npy")
    assert norms.shape == (4, 7) and np.all(norms > 0)
    for p in "qkvo":
        h = np.load(out / f"head_norms_{p}.npy")
        assert h.shape[0] == 4 and h.shape[1] in (2, 4) and np.all(h > 0)
    sv = np.load(out / "spectrum_attn.q.npy")
    assert sv.shape == (4, 64) and np.all(np.diff(sv, axis=1) <= 1e-6)  # descending
    rows = json.loads((out / "resid_stats.json").read_text())
    assert [r["site"] for r in rows] == [f"resid_out.{i}" for i in range(4)]
    assert all(r["std"] > 0 and r["n"] == 256 for r in rows)
    assert np.load(out / "resid_dim_std.npy").shape == (4, 64)
    assert np.load(out / "resid_dim_kurtosis.npy").shape == (4, 64)
    import lminspect as li

    assert li.activations(out / "activations")["resid_out.3"].n == 256
    assert "Frobenius norm" in (out / "layer_norms_plot.txt").read_text()
    assert len(json.loads((out / "tensor_stats.json").read_text())) == 4 * 9


def _check_frankenllama(out: Path) -> None:
    from lminspect.stitch import PRESETS

    rows = json.loads((out / "plans.json").read_text())
    assert [r["plan"] for r in rows] == list(PRESETS)
    assert all(0 <= r["acc"] <= 1 and 0 <= r["acc_norm"] <= 1 and r["n"] == 4 for r in rows)
    with open(out / "plans.csv") as f:
        assert len(list(csv.DictReader(f))) == len(PRESETS)
    gens = (out / "generations.md").read_text()
    assert gens.count("Once upon a time") == len(PRESETS)
    att = np.load(out / "attention_baseline.npy")
    assert att.ndim == 4 and att.shape[0] == 4 and np.allclose(att.sum(-1), 1, atol=1e-4)
    assert np.load(out / "attention_fft_baseline.npy").shape == att.shape
    assert "baseline" in (out / "acc_norm_plot.txt").read_text()


def _check_lmplay_compare(out: Path) -> None:
    rows = json.loads((out / "runs.json").read_text())
    assert sorted(r["name"] for r in rows) == ["gpt2ish", "llamaish"]
    assert all(r["steps"] == 6 and r["status"] == "done" and math.isfinite(r["loss"]) for r in rows)
    assert "gpt2ish (baseline)" in (out / "loss_diff.txt").read_text()
    assert "llamaish" in (out / "loss.txt").read_text()


CHECKS = {"weight_structure": _check_weight_structure, "frankenllama": _check_frankenllama,
          "lmplay_compare": _check_lmplay_compare}


def test_sessions_exist():
    names = {p.stem for p in SESSIONS}
    assert set(CHECKS) <= names
    for p in SESSIONS:
        assert summary(p), f"{p.name} has no docstring"
        if p.stem in CHECKS:
            assert len(p.read_text().splitlines()) < 80


@pytest.mark.parametrize("script", SESSIONS, ids=[p.stem for p in SESSIONS])
def test_session_quick(script, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LMINSPECT_SESSIONS_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("LMINSPECT_CACHE", str(tmp_path / "cache"))
    run_session(script, [], quick=True)
    out = tmp_path / "out" / script.stem
    if not out.is_dir():  # a session that ignores LMINSPECT_SESSIONS_OUT uses the default folder
        out = tmp_path / "results" / "sessions" / script.stem
    assert out.is_dir() and any(out.iterdir()), f"{script.name} wrote nothing"
    manifest = out / "manifest.json"
    if manifest.is_file():
        files = json.loads(manifest.read_text())["files"]
        assert files
        for f in files:
            p = out / f
            assert p.is_file() and p.stat().st_size > 0, f
            if p.suffix == ".json":
                assert _finite_numbers(json.loads(p.read_text())), f
            elif p.suffix == ".npy":
                assert np.all(np.isfinite(np.load(p))), f
    if script.stem in CHECKS:
        CHECKS[script.stem](out)


def test_session_args(tmp_path, monkeypatch):
    monkeypatch.delenv("LMINSPECT_QUICK", raising=False)
    monkeypatch.delenv("LMINSPECT_SESSIONS_OUT", raising=False)
    monkeypatch.chdir(tmp_path)
    s = session("x", ["--quick", "--out", str(tmp_path / "o"), "MODEL"])
    assert s.quick and s.out == tmp_path / "o" and s.args == ["MODEL"]
    s = session("x", [])
    assert not s.quick and s.out == Path("results/sessions/x")
    monkeypatch.setenv("LMINSPECT_SESSIONS_OUT", str(tmp_path / "base"))
    monkeypatch.setenv("LMINSPECT_QUICK", "1")
    s = session("y", ["--out=z"])
    assert s.quick and s.out == Path("z")
    assert session("y", []).out == tmp_path / "base" / "y"


def test_session_cli(tmp_path, monkeypatch):
    from lminspect.cli import app

    monkeypatch.delenv("LMINSPECT_QUICK", raising=False)
    script = tmp_path / "echo.py"
    script.write_text('"""Echo argv and quick mode."""\nimport json, os, sys\n'
                      'from lminspect.sessions_runner import session\n'
                      's = session("echo")\n'
                      's.write_json("argv.json", {"argv": sys.argv[1:], "quick": s.quick, "args": s.args})\n')
    res = CliRunner().invoke(app, ["session", "run", str(script), "--quick", "--out", str(tmp_path / "o"), "A", "--b"])
    assert res.exit_code == 0, res.output
    got = json.loads((tmp_path / "o" / "argv.json").read_text())
    assert got["quick"] and got["args"] == ["A", "--b"]
    res = CliRunner().invoke(app, ["session", "list", "--dir", str(tmp_path)])
    assert res.exit_code == 0 and "echo" in res.output and "Echo argv and quick mode." in res.output
    res = CliRunner().invoke(app, ["session", "list", "--dir", str(ROOT / "sessions")])
    assert all(p.stem in res.output for p in SESSIONS)
    res = CliRunner().invoke(app, ["session", "run", "no_such_session"])
    assert res.exit_code == 2 and "no such session" in res.output
