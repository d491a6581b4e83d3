"""Issue 29, section 5: the REPL and the CLI agree (tensor globs and their order, the statistics'
column names and units, run names under a folder, plotting a folder of runs, the by-layer alpha)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import lminspect as li
from lminspect.cli import app


@pytest.fixture(scope="module")
def deep_dir(tmp_path_factory):
    """A 12-layer quick model (layers 10 and 11 sort between 1 and 2 as text) whose
    layers.0.mlp.down is half zeros (frac_near_zero 0.5)."""
    from safetensors.numpy import load_file, save_file

    d = li.quick_model(tmp_path_factory.mktemp("agree") / "deep", n_layer=12, dim=32, n_head=2, n_kv_head=1)
    path = d / "model.safetensors"
    tensors = load_file(path)
    key = next(k for k in tensors if "layers.0.mlp.down" in k)
    w = tensors[key].copy()
    w.reshape(-1)[: w.size // 2] = 0.0
    tensors[key] = w
    save_file(tensors, path, metadata={"format": "pt"})
    return d


def _json_rows(args):
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def test_glob_without_weight_in_numeric_order_in_repl_and_cli(deep_dir):
    want = [f"layers.{i}.mlp.down.weight" for i in range(12)]
    m = li.open(deep_dir)
    assert m.stats("layers.*.mlp.down", svd=False)["name"] == want  # was 0, 1, 10, 11, 2, ...
    rows = _json_rows(["stats", str(deep_dir), "-t", "layers.*.mlp.down", "--json", "--no-svd"])
    assert [r["canonical"] for r in rows] == want  # was "no tensor matches"
    assert [r["name"] for r in m.tensors.table("layers.1*.mlp.down").to_list()] == [
        f"model.layers.{i}.mlp.down_proj.weight" for i in (1, 10, 11)]


def test_one_column_vocabulary_and_frac_near_zero_a_fraction(deep_dir):
    m = li.open(deep_dir)
    tab = m.stats("layers.0.mlp.*", svd=False)
    row = next(r for r in tab if r["name"] == "layers.0.mlp.down.weight")
    assert row["frac_near_zero"] == pytest.approx(0.5) and row["layer"] == 0
    assert tab["kurt"] == tab["kurtosis"] and tab["~0"] == tab["frac_near_zero"]  # the old headers still read
    r = CliRunner().invoke(app, ["stats", str(deep_dir), "-t", "layers.0.mlp.down", "--no-svd"],
                           env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    header = next(line for line in r.stdout.splitlines() if "name" in line)
    assert "kurtosis" in header and "frac_near_zero" in header and "kurt " not in header and "~0" not in header
    assert " 0.5 " in r.stdout and "%" not in r.stdout  # a fraction, as in the REPL and --json
    by_alias = CliRunner().invoke(app, ["stats", str(deep_dir), "--no-svd", "--by-layer", "kurt"])
    assert by_alias.exit_code == 0 and "kurtosis by layer" in by_alias.stdout
    assert m.by_layer("kurt", svd=False)["mlp.down"] == m.by_layer("kurtosis", svd=False)["mlp.down"]


def test_by_layer_alpha_has_layer_and_warning_columns(deep_dir):
    m = li.open(deep_dir)
    tab = m.by_layer("alpha")
    df = tab.to_pandas()
    assert list(df["layer"]) == list(range(12)) and "warning" in df.columns
    flagged = [r for r in m.stats("layers.*") if r["alpha_warning"]]
    assert flagged  # random weights: some matrices are flagged under-trained
    f = flagged[0]
    part = f["name"].removesuffix(".weight").split(".", 2)[2]
    cell = df.loc[df["layer"] == f["layer"], "warning"].item()  # "under-trained: attn.q, mlp.up"
    assert f"{f['alpha_warning']}: " in cell and part in cell.split(f"{f['alpha_warning']}: ")[1].split(";")[0]
    r = CliRunner().invoke(app, ["stats", str(deep_dir), "--by-layer", "alpha"])
    assert r.exit_code == 0 and "warning" in r.stdout and f["alpha_warning"] in r.stdout


def _write_run(d, losses):
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"name": d.name, "experiment": d.name, "status": "done"}))
    rows = [{"step": i + 1, "tokens": 100 * (i + 1), "loss": v} for i, v in enumerate(losses)]
    (d / "stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture()
def batches(tmp_path):
    root = tmp_path / "runs"
    _write_run(root / "cmp" / "gpt2ish", [5.0, 4.0, 3.0])
    _write_run(root / "cmp" / "base", [5.0, 4.5, 4.0])
    _write_run(root / "solo", [6.0, 5.0, 4.5])
    return root


def test_runs_keep_their_parent_folder(batches):
    rs = li.runs(batches)
    assert sorted(rs.names) == ["cmp/base", "cmp/gpt2ish", "solo"]
    assert rs["gpt2ish"].name == "cmp/gpt2ish" and rs["cmp/gpt2ish"] is rs["gpt2ish"]
    assert li.runs(batches / "cmp" / "gpt2ish").names == ["gpt2ish"]  # a run given itself keeps its name
    assert sorted(li.runs(batches / "cmp").names) == ["base", "gpt2ish"]


def test_plot_accepts_a_folder_of_runs(batches, tmp_path):
    r = CliRunner().invoke(app, ["plot", str(batches), "--width", "80", "--height", "15"])
    assert r.exit_code == 0, r.output
    assert "3 runs under" in r.stderr and "cmp/gpt2ish" in r.stderr
    assert all(n in r.stdout for n in ("cmp/gpt2ish", "cmp/base", "solo"))
    d = CliRunner().invoke(app, ["plot", str(batches / "cmp"), "--diff", "--baseline", "base", "--width", "80",
                                 "--height", "15"])
    assert d.exit_code == 0 and "baseline" in d.stdout
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    e = CliRunner().invoke(app, ["plot", str(empty)])
    assert e.exit_code == 2 and "no run" in e.output and "Traceback" not in e.output


def test_figures_numbers_agree(deep_dir):
    """The CLI --json and the REPL give the same numbers for the same tensor."""
    m = li.open(deep_dir)
    a = m.stats("layers.3.attn.q")[0]
    b = _json_rows(["stats", str(deep_dir), "-t", "layers.3.attn.q", "--json"])[0]
    for k in ("mean", "std", "kurtosis", "frac_near_zero", "stable_rank", "alpha"):
        assert np.isclose(a[k], b[k]), k


def test_repl_histogram_is_the_cli_histogram(deep_dir):
    m = li.open(deep_dir)
    fig = m.layers[2].mlp.down.hist()
    r = CliRunner().invoke(app, ["stats", str(deep_dir), "-t", "layers.2.mlp.down", "--no-svd"])
    assert r.exit_code == 0 and fig.text.splitlines()[0] == "layers.2.mlp.down.weight: 2,560 values"
    assert fig.text in r.stdout  # the same bars, line for line
