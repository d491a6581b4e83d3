"""``lminspect timeline``: a statistic across a short trained run's checkpoints, embeddings in one
sign-stable PCA plane, attention maps across checkpoints, the REPL's ``Runs.timeline``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lminspect.cli import app
from lminspect.compare.checkpoints import list_checkpoints
from lminspect.compare.embeddings import fit_pca, fix_signs
from lminspect.compare.timeline import select_checkpoints, stat_records, timeline_columns
from lminspect.weights import open_store

pytestmark = pytest.mark.xdist_group("timeline_run")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LMINSPECT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny gpt2ish run, 6 steps, a checkpoint every 2, all kept."""
    from lminspect.train import TrainConfig, train

    d = tmp_path_factory.mktemp("timeline") / "run"
    train(TrainConfig(exp="gpt2ish", run_dir=str(d), batch_size=4, mini_batch_size=4, seq_len=32, max_steps=6,
                      eval_every=0, save_every=2, keep_checkpoints=0, model_args={"n_layer": 2, "dim": 32, "n_head": 2},
                      optimizer="adamw", lr=3e-3, progress=False))
    return d


def test_checkpoints_and_every(run_dir):
    cks = list_checkpoints(run_dir)
    assert [c.step for c in cks] == [2, 4, 6] and [c.tokens for c in cks] == [256, 512, 768]
    assert [c.step for c in select_checkpoints(cks, 2)] == [2, 6]
    assert [c.step for c in select_checkpoints(cks, 5)] == [2, 6]  # the newest always


def test_stat_timeline_is_each_checkpoints_statistics(run_dir):
    cks = list_checkpoints(run_dir)
    steps, toks, cols = timeline_columns(stat_records(cks, "std"))
    assert steps == [2, 4, 6] and toks == [256, 512, 768]
    assert {"attn.q", "mlp.down", "attn_norm"} <= set(cols)
    for k, ck in enumerate(cks):
        store = open_store(ck.path)
        want = np.mean([np.asarray(store[f"layers.{i}.attn.q.weight"]).std() for i in range(2)])
        assert cols["attn.q"][k] == pytest.approx(want, rel=1e-5)
    _, _, one = timeline_columns(stat_records(cks, "std"), layer=1)
    assert one["attn.q"][-1] == pytest.approx(float(np.asarray(open_store(cks[-1].path)["layers.1.attn.q.weight"]).std()),
                                              rel=1e-5)
    _, _, per = timeline_columns(stat_records(cks, "rms", tensors=["embed.tokens"]), per_tensor=True)
    assert list(per) == ["embed.tokens.weight"] and per["embed.tokens.weight"][0] != per["embed.tokens.weight"][-1]


def test_pca_is_stable_under_sign_flips(run_dir, monkeypatch):
    cks = list_checkpoints(run_dir)
    pca = fit_pca(cks, "last")
    assert pca.proj.shape == (3, 4096, 2) and pca.explained[0] >= pca.explained[1] > 0
    assert np.abs(pca.proj[-1].mean(0)).max() < 1e-4  # centred on the fitted checkpoint
    eigh = np.linalg.eigh
    monkeypatch.setattr(np.linalg, "eigh", lambda a: (eigh(a)[0], -eigh(a)[1]))  # a solver that flips signs
    flipped = fit_pca(cks, "last")
    np.testing.assert_array_equal(flipped.proj, pca.proj)
    c = np.array([[0.6, -0.1], [-0.8, 0.9]])
    np.testing.assert_array_equal(fix_signs(c), fix_signs(-c))
    assert fix_signs(c)[1, 0] > 0 and fix_signs(c)[1, 1] > 0


def test_joint_pca_is_pca_of_all_checkpoints(run_dir):
    cks = list_checkpoints(run_dir)
    pca = fit_pca(cks, "joint")
    x = np.concatenate([np.asarray(open_store(c.path)["embed.tokens.weight"], np.float64) for c in cks])
    ev, vec = np.linalg.eigh(np.cov(x, rowvar=False, bias=True))
    np.testing.assert_allclose(np.abs(pca.components[:, 0]), np.abs(vec[:, -1]), atol=1e-6)
    np.testing.assert_allclose(pca.explained[0], ev[-1] / ev.sum(), rtol=1e-6)


def test_attention_across_checkpoints(run_dir):
    from lminspect.compare.attention import attention_across, small_multiples

    cks = list_checkpoints(run_dir)
    probs, labels = attention_across(cks, "Once upon a time")
    n = len(labels)
    assert probs.shape == (3, 2, 2, n, n)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert np.triu(probs[0, 0, 0], 1).max() == 0  # causal
    text = small_multiples(probs, [c.step for c in cks], 1)
    assert "step 2" in text and "step 6" in text and "h1" in text
    assert text.count("|@") >= 6  # the first query attends only to itself: full shade, every map


def test_cli_timeline_views(run_dir, tmp_path):
    r = CliRunner().invoke(app, ["timeline", str(run_dir), "--stat", "stable_rank"])
    assert r.exit_code == 0, r.output
    assert "stable_rank across 3 checkpoints" in r.output and "mlp.down" in r.output
    r = CliRunner().invoke(app, ["timeline", str(run_dir), "--stat", "std", "--json", "--every", "2"])
    data = json.loads(r.stdout)
    assert data["steps"] == [2, 6] and data["tokens"] == [256, 768] and "attn.q" in data["columns"]
    out = tmp_path / "emb"
    r = CliRunner().invoke(app, ["timeline", str(run_dir), "--embeddings", "--tokens", "the,and", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "PCA" in r.output and "the" in r.output
    saved = json.loads((out / "timeline.json").read_text())
    assert saved["labels"] == ["the", "and"] and len(saved["paths"][0]) == 3
    assert np.load(out / "embeddings_pca.npy").shape == (3, 4096, 2)
    r = CliRunner().invoke(app, ["timeline", str(run_dir), "--embeddings", "--out", str(out)])
    assert r.exit_code == 2 and "refusing to replace it" in r.output
    r = CliRunner().invoke(app, ["timeline", str(run_dir), "--embeddings", "--out", str(out), "--overwrite"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["timeline", str(run_dir), "--attention", "Once upon a time", "--head", "1"])
    assert r.exit_code == 0, r.output
    assert "h1" in r.output and "h0" not in r.output


@pytest.mark.parametrize(("args", "says"), [
    (["{tmp}"], "not a run directory with checkpoints"),
    (["{run}", "--stat", "bogus"], "--stat 'bogus'"),
    (["{run}", "--every", "0"], "--every 0"),
    (["{run}", "--layer", "7"], "--layer 7"),
    (["{run}", "--embeddings", "--token-labels", "zqxjkvbw"], "not one token"),
])
def test_cli_bad_input_is_one_line(run_dir, tmp_path, args, says):
    args = ["timeline", *(a.format(run=run_dir, tmp=tmp_path) for a in args)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lminspect: error:") and says in lines[0], r.output


def test_repl_runs_timeline(run_dir):
    import lminspect as li

    t = li.runs(str(run_dir)).timeline("std", every=2)
    assert isinstance(t, li.Table) and t["step"] == [2, 6] and "attn.q" in t.columns
    fig = li.runs(str(run_dir)).plot_timeline("std")
    assert "std across checkpoints" in str(fig)
    d = li.open(f"{run_dir}@first").diff(str(run_dir), svd=False)
    assert all(r["rel_change"] > 0 for r in d if r["name"].endswith(".weight"))


@pytest.mark.parametrize("view", [[], ["--embeddings", "--tokens", "the"], ["--attention", "Once upon"]])
def test_cli_saves_figures(run_dir, tmp_path, view):
    pytest.importorskip("matplotlib")
    fig = tmp_path / "fig.png"
    r = CliRunner().invoke(app, ["timeline", str(run_dir), "--stat", "std", *view, "--save", str(fig)])
    assert r.exit_code == 0, r.output
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = CliRunner().invoke(app, ["timeline", str(run_dir), "--stat", "std", *view, "--save", str(fig)])
    assert r.exit_code == 2 and "refusing to replace it" in r.output
    r = CliRunner().invoke(app, ["diff", f"{run_dir}@first", str(run_dir), "--no-svd", "--by-layer", "rel_change",
                                 "--save", str(tmp_path / "d.svg")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "d.svg").read_text().lstrip().startswith("<?xml")
