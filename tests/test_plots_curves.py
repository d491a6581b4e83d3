"""plots.py: smoothing stays aligned, diff vs baseline on a common grid, text figures for CLI/TUI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lminspect.errors import UserError
from lminspect.plots import diff_series, interp, pick_baseline, plot_runs, run_series, smooth
from lminspect.train.runlog import load_run


def make_run(root: Path, name: str, n: int, loss=lambda i: 5.0 - 0.01 * i, tokens_per_step: int = 100,
             status: str = "done") -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"name": name, "status": status}))
    rows = []
    for i in range(1, n + 1):
        row = {"step": i, "tokens": i * tokens_per_step, "loss": loss(i), "acc": 0.1 + 0.001 * i}
        if i % 10 == 0:
            row["val_loss"] = loss(i) + 0.1
        rows.append(json.dumps(row))
    (d / "stats.jsonl").write_text("\n".join(rows) + "\n")
    return d


def test_smooth_is_centred_and_keeps_length():
    ys = [0, 0, 0, 10, 0, 0, 0]
    s = smooth(ys, 2)
    assert len(s) == len(ys)
    assert max(range(len(s)), key=s.__getitem__) == 3  # peak stays where it was
    assert s[2] == pytest.approx(s[4])
    line = [float(i) for i in range(20)]
    assert smooth(line, 3)[5:15] == pytest.approx(line[5:15])  # no lag on a straight line
    assert smooth(ys, 0) == ys


def test_interp():
    assert interp([0, 10], [0, 100], [0, 5, 10, 11]) [:3] == [0, 50, 100]
    assert math.isnan(interp([0, 10], [0, 100], [11])[0])


def test_load_run_columns_and_missing_values(tmp_path):
    run = load_run(make_run(tmp_path, "a", 30, status="running"))
    assert run.name == "a" and len(run) == 30 and run.tokens == 3000
    assert run.is_running  # stats just written
    assert math.isnan(run.columns["val_loss"][0])
    xs, ys = run.series("val_loss", "step")
    assert xs == [10, 20, 30]
    with pytest.raises(UserError, match="no metric 'bleu'"):
        run.series("bleu")
    with pytest.raises(UserError, match="not a run directory"):
        load_run(tmp_path)


def test_diff_uses_longest_run_and_cuts_where_shorter_ends(tmp_path):
    base = load_run(make_run(tmp_path, "base", 40))
    exp = load_run(make_run(tmp_path, "exp", 20, loss=lambda i: 4.5 - 0.01 * i, tokens_per_step=100))
    assert pick_baseline([exp, base]) is base
    d = diff_series([exp, base], "loss")
    assert d["base"][1] == pytest.approx([0.0] * 40)
    gx, gy = d["exp"]
    assert gx[-1] == 2000 and len(gx) == 20  # cut where the shorter run ends
    assert gy == pytest.approx([-0.5] * 20)
    # an explicit baseline, and a run on a different x grid is interpolated
    odd = load_run(make_run(tmp_path, "odd", 80, loss=lambda i: 5.0 - 0.005 * i, tokens_per_step=50))
    d = diff_series([base, odd], "loss", baseline="base")
    assert d["odd"][1] == pytest.approx([0.0] * 40, abs=1e-9)
    with pytest.raises(UserError, match="--baseline 'zzz'"):
        diff_series([base, odd], "loss", baseline="zzz")


def test_log_series(tmp_path):
    run = load_run(make_run(tmp_path, "a", 5, loss=lambda i: 10.0 ** i))
    xs, ys = run_series(run, "loss", "steps", log=True)
    assert ys == pytest.approx([1, 2, 3, 4, 5])


def test_plot_text(tmp_path):
    a = load_run(make_run(tmp_path, "alpha", 40))
    b = load_run(make_run(tmp_path, "beta", 25, loss=lambda i: 4.8 - 0.02 * i))
    text = plot_runs([a, b], "loss", width=70, height=18, color=False)
    lines = text.splitlines()
    assert len(lines) == 18 and max(len(ln) for ln in lines) <= 70
    assert "alpha" in text and "beta" in text and "train loss" in text and "tokens" in text
    assert "\x1b[" not in text
    text = plot_runs([a, b], "loss", diff=True, smooth_n=3, width=70, height=18, color=False, x="steps")
    assert "alpha (baseline)" in text and "baseline (alpha)" in text and "steps" in text
    text = plot_runs([a], "val_loss", log=True, width=60, height=15, color=False)
    assert "log10 validation loss" in text
    with pytest.raises(UserError, match="--x"):
        plot_runs([a], "loss", x="epochs", color=False)


def test_plot_cli(tmp_path):
    from typer.testing import CliRunner

    from lminspect.cli import app

    a = make_run(tmp_path, "alpha", 40)
    b = make_run(tmp_path, "beta", 25)
    out = tmp_path / "fig.txt"
    r = CliRunner().invoke(app, ["plot", str(a), str(b), "--diff", "--smooth", "2", "--out", str(out),
                                 "--width", "80", "--height", "20"])
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert "beta" in text and "\x1b[" not in text and len(text.rstrip("\n").splitlines()) == 20
    r = CliRunner().invoke(app, ["plot", str(a), "--metric", "acc", "--width", "60", "--height", "12"])
    assert r.exit_code == 0 and "train accuracy" in r.output


def test_lines_figure_integer_x_gets_integer_ticks():
    from lminspect.plots import lines_figure

    axis = lines_figure({"a": [3.0, 1.0, 2.0, float("nan"), 5.0]}, width=40, height=8).splitlines()[-1]
    labels = axis.split()
    assert labels[0] == "0" and labels[-1] == "4" and all(t.isdigit() for t in labels)  # not 0.00 0.75 ...
    fractional = lines_figure({"a": ([0.5, 1.5], [1.0, 2.0])}, width=40, height=8).splitlines()[-1]
    assert "0.50" in fractional


def test_lines_figure_plain_text_tells_lines_apart():
    from lminspect.plots import lines_figure

    fig = lines_figure({"a": [1.0, 2.0], "b": [2.0, 1.0]}, width=40, height=8)
    assert "oo a" in fig and "xx b" in fig  # one marker character per line, shown in the legend


def test_many_lines_legend_below_and_short_flops_ticks():
    from lminspect.plots import lines_figure

    series = {f"run{k}": ([1.2e9 * i for i in range(20)], [5 - 0.1 * i * (1 + k / 5) for i in range(20)])
              for k in range(5)}
    fig = lines_figure(series, title="train loss", xlabel="training FLOPs", width=80, height=16)
    lines = fig.splitlines()
    assert len(lines) == 16
    assert lines[-1].startswith("oo run0  xx run1  ++ run2")  # the legend under the figure, off the data
    assert not any("run0" in ln for ln in lines[:-1])
    axis = next(ln for ln in lines if "10G" in ln)
    assert "20G" in axis and "000000000" not in fig


def test_plot_save_png_same_title(tmp_path):
    pytest.importorskip("matplotlib")
    Image = pytest.importorskip("PIL.Image")
    from typer.testing import CliRunner

    from lminspect.cli import app

    a, b = make_run(tmp_path, "alpha", 40), make_run(tmp_path, "beta", 25)
    png, svg = tmp_path / "diff.png", tmp_path / "diff.svg"
    r = CliRunner().invoke(app, ["plot", str(a), str(b), "--diff", "--save", str(png), "--width", "60"])
    assert r.exit_code == 0, r.output
    assert "train loss - baseline (alpha)" in r.stdout  # the terminal figure is still printed
    with Image.open(png) as im:
        assert im.format == "PNG"
    r = CliRunner().invoke(app, ["plot", str(a), str(b), "--diff", "--save", str(svg)])
    assert "train loss - baseline (alpha)" in svg.read_text()
    r = CliRunner().invoke(app, ["plot", str(a), "--save", str(png)])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "--overwrite" in r.stderr
