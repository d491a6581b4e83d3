"""Batch metadata (parquet), ordered training with seen ids, and the saturation plot (seed 001)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lminspect.cli import app

pytest.importorskip("torch")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def meta_file(tmp_path_factory, tiny_llama_dir):
    out = tmp_path_factory.mktemp("meta") / "meta.parquet"
    r = CliRunner().invoke(app, ["data", "metadata", "builtin", "--model", str(tiny_llama_dir),
                                 "--limit", "60", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


def test_metadata_columns(meta_file):
    t = pq.read_table(meta_file).to_pydict()
    for col in ("id", "index", "split", "n_chars", "n_tokens", "ppl", "nll", "type_token_ratio", "n_words"):
        assert col in t
    assert len(t["id"]) == 60 and len(set(t["id"])) == 60
    assert t["index"] == list(range(60)) and t["split"][0] == "val" and t["split"][1] == "train"
    assert all(p > 1 for p in t["ppl"]) and all(n > 0 for n in t["n_tokens"])
    from lminspect.documents import read_documents, sample_id

    assert t["id"][3] == sample_id(read_documents("builtin:train")[3])  # stable: hash of the text


def test_metadata_plugins_and_bad_metric(tmp_path):
    from lminspect.metadata.metrics import BUILTIN_METRICS, available_metrics

    assert set(BUILTIN_METRICS) <= set(available_metrics())
    r = CliRunner().invoke(app, ["data", "metadata", "builtin", "--metric", "nope", "--out", str(tmp_path / "m.parquet")])
    assert r.exit_code == 2 and "unknown metric" in (r.stderr if hasattr(r, "stderr") else r.output)
    assert not (tmp_path / "m.parquet").exists()


def test_make_order():
    from lminspect.train.ordered import make_order

    keys = [(i, float(-i)) for i in range(20)]
    assert make_order(keys, "asc") == list(range(19, -1, -1))
    assert make_order(keys, "desc") == list(range(20))
    sh = make_order(keys, "shuffle", seed=1)
    assert sorted(sh) == list(range(20)) and sh != list(range(20))
    b = make_order(keys, "shuffle-within-buckets", buckets=2)
    assert set(b[:10]) == set(range(10, 20))


def _train(tmp_path, name, meta_file, **kw):
    from lminspect.train import TrainConfig, train

    return train(TrainConfig(exp="gpt2ish", run_dir=str(tmp_path / name), batch_size=4, seq_len=32,
                             max_steps=6, eval_every=0, save_every=2, optimizer="adamw", lr=3e-3, progress=False,
                             model_args={"n_layer": 1, "dim": 32, "n_head": 2}, metadata=str(meta_file), **kw))


def test_ordered_training_seen_ids_and_saturation(tmp_path, meta_file):
    from lminspect.plots import plot_saturation
    from lminspect.train import load_run
    from lminspect.train.ordered import read_metadata

    srt = _train(tmp_path, "sorted", meta_file, order_by="ppl", order="asc")
    _train(tmp_path, "shuffled", meta_file, order="shuffle")
    meta = read_metadata(str(meta_file))
    ppl = dict(zip(meta["id"], meta["ppl"], strict=True))
    seen = json.loads((srt.checkpoint / "seen_ids.json").read_text())
    train_ppl = sorted(p for p, s in zip(meta["ppl"], meta["split"], strict=True) if s == "train")
    assert [ppl[s] for s in seen] == train_ppl[: len(seen)]  # lowest perplexity first
    run_s, run_u = load_run(tmp_path / "sorted"), load_run(tmp_path / "shuffled")
    assert "seen_ppl" in run_s.columns and "seen_docs" in run_s.columns
    assert run_s.columns["seen_ppl"][-1] < run_u.columns["seen_ppl"][-1]
    text = plot_saturation([run_s, run_u], width=150, height=20, color=False)
    assert "mean n_words seen" in plot_saturation([run_s], metrics=["n_words"], width=150, color=False)
    assert "mean ppl seen" in text and "sorted" in text and "shuffled" in text
    r = CliRunner().invoke(app, ["plot", str(tmp_path / "sorted"), str(tmp_path / "shuffled"), "--saturation",
                                 "--width", "150", "--height", "20", "--out", str(tmp_path / "sat.txt")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["plot", str(tmp_path / "sorted"), "--x", "flops", "--out", str(tmp_path / "f.txt")])
    assert r.exit_code == 0 and "FLOPs" in (tmp_path / "f.txt").read_text()


def test_ordered_bad_input(tmp_path, meta_file):
    from lminspect.errors import UserError

    with pytest.raises(UserError, match="not a metadata column"):
        _train(tmp_path, "a", meta_file, order_by="nope")
    with pytest.raises(UserError, match="--order"):
        _train(tmp_path, "b", meta_file, order_by="ppl", order="sideways")
