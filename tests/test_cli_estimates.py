"""Long commands say up front how long they will take and how to take a quick look; a finished
activations collection is extended only when asked, and says so."""

from __future__ import annotations

import io

import pytest
from typer.testing import CliRunner

from lminspect import runtime
from lminspect.cli import app
from lminspect.runtime import Estimate, Progress, nice_count

runner = CliRunner()


@pytest.mark.parametrize(("x", "n"), [(0.3, 1), (1.9, 1), (2.5, 2), (37, 20), (60, 50), (199, 100), (1234.5, 1000),
                                      (7000, 5000)])
def test_nice_count(x, n):
    assert nice_count(x) == n


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_long_job_prints_one_estimate_early(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(runtime.time, "perf_counter", clock)
    buf = io.StringIO()
    est = Estimate(200, lambda s: f"--limit {nice_count(200 * 60 / s)} for a quick look", threads=1, stream=buf)
    est.update(0)
    clock.t += 0.5
    est.update(1)  # under a second: no rate yet
    assert buf.getvalue() == ""
    clock.t += 8.0  # 2 items in 8.5 s: 200 items ~ 14 min
    est.update(2)
    clock.t += 100
    est.update(50)
    assert buf.getvalue() == "lminspect: note: ~14 min at 1 thread; --limit 10 for a quick look\n"


def test_a_short_job_says_nothing(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(runtime.time, "perf_counter", clock)
    buf = io.StringIO()
    with Progress("sweep", 100, "items", stream=buf, every=1e9, bar=False, quick=lambda s: "quick") as prog:
        clock.t += 1.0
        prog.update(10)  # 100 items ~ 10 s
        clock.t += 9.0
        prog.update(100)
    assert "note" not in buf.getvalue()
    buf = io.StringIO()
    with Progress("sweep", 1000, "items", stream=buf, every=1e9, bar=False, quick=lambda s: "--limit 9",
                  threads=2) as prog:
        clock.t += 2.0
        prog.update(5)
    assert buf.getvalue() == "lminspect: note: ~7 min at 2 threads; --limit 9\n"


def test_a_finished_collection_is_extended_only_when_asked(tiny_llama_dir, tmp_path):
    out = tmp_path / "acts"
    args = ["activations", str(tiny_llama_dir), "--out", str(out), "--seq-len", "16", "--batch-size", "2"]
    r = runner.invoke(app, [*args, "--tokens", "64"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, args)  # the default --tokens is more: refused, one line
    assert r.exit_code == 2, r.output
    err = r.stderr.strip()
    assert "\n" not in err and "finished collection of 64 tokens" in err and "--tokens" in err
    r = runner.invoke(app, [*args, "--tokens", "96"])
    assert r.exit_code == 0, r.output
    assert f"lminspect: {out}: continuing from 64 to 96 tokens" in r.stderr
    r = runner.invoke(app, [*args, "--tokens", "96"])  # finished at 96: nothing to do
    assert r.exit_code == 0 and "already complete" in r.stderr
