"""li.open / Model: lazy opening, tensor handles and navigation, stats tables, engine-backed methods."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest

import lminspect as li
from lminspect.errors import UserError


@pytest.fixture(scope="module")
def quick_dir(tmp_path_factory):
    return li.quick_model(tmp_path_factory.mktemp("api") / "quick")


@pytest.fixture()
def m(quick_dir):
    return li.open(quick_dir)


def test_open_is_lazy_and_reprs(m, quick_dir):
    assert isinstance(m, li.Model)
    assert not m._shared.opened.built
    text = repr(m)
    assert "llama" in text and str(quick_dir) in text and "4 layers" in text and "not built" in text
    _ = m.tensors, m["layers.0.attn.q"].shape, m.layers[0].attn.q.numpy()
    assert not m._shared.opened.built  # browsing never builds the engine
    assert li.open(m) is m


def test_open_errors():
    with pytest.raises(UserError, match="no such file"):
        li.open("/definitely/not/here")


def test_tensors_mapping(m):
    t = m.tensors
    assert len(t) == len(m.store)
    names = list(t)
    assert names == m.store.keys()
    r = repr(t)
    assert names[0] in r and "F32" in r and "4096x64" in r
    own = t["model.layers.0.self_attn.q_proj.weight"]
    canon = t["layers.0.attn.q.weight"]
    np.testing.assert_array_equal(own.numpy(), canon.numpy())
    assert "layers.0.attn.q.weight" in t._ipython_key_completions_()
    with pytest.raises(KeyError):
        t["nope"]


def test_tensor_handle(m):
    q = m["layers.1.attn.q"]
    assert q.name == "layers.1.attn.q.weight"
    assert q.stored_name == "model.layers.1.self_attn.q_proj.weight"
    assert q.shape == (64, 64) and q.dtype == "F32" and q.size == 4096
    r = repr(q)
    for part in ("layers.1.attn.q.weight", "64x64", "F32", "4,096", "model.safetensors"):
        assert part in r
    np.testing.assert_array_equal(np.asarray(q), m.store.get_canonical("layers.1.attn.q.weight"))
    assert q.heads().shape == (4, 16, 64)
    assert m["layers.1.attn.k"].heads().shape == (2, 16, 64)
    assert m["layers.1.attn.o"].heads().shape == (4, 64, 16)
    st = q.stats()
    assert st["numel"] == 4096 and np.isfinite(st["std"]) and "..." in repr(st)
    assert q.norm() == pytest.approx(float(np.linalg.norm(q.numpy())), rel=1e-5)
    assert q.bias is None
    with pytest.raises(UserError, match="no tensor"):
        m["layers.9.attn.q"]


def test_navigation_and_dir(m):
    assert len(m.layers) == 4
    q = m.layers[3].attn.q
    assert isinstance(q, li.api.Tensor) and q.name == "layers.3.attn.q.weight"
    assert m.layers[-1].attn.q.name == "layers.3.attn.q.weight"
    assert m.layers[2]["mlp"].down.name == "layers.2.mlp.down.weight"
    assert m.embed.tokens.shape == (4096, 64)
    assert m.norm.name == "norm.weight"
    assert {"layers", "embed", "norm", "generate", "stats"} <= set(dir(m))
    assert {"attn", "mlp", "attn_norm", "mlp_norm"} <= set(dir(m.layers[0]))
    assert {"q", "k", "v", "o"} <= set(dir(m.layers[0].attn))
    assert "attn_norm" in repr(m.layers) and "layers.0.attn.q.weight" in repr(m.layers[0])
    with pytest.raises(AttributeError):
        _ = m.layers[0].attn.nope
    with pytest.raises(AttributeError):
        _ = m.nope
    with pytest.raises(IndexError):
        m.layers[4]


def test_stats_table(m, monkeypatch):
    tab = m.stats("layers.0.attn.*")
    assert len(tab) == 4
    rows = tab.to_list()
    assert [r["name"] for r in rows] == [f"layers.0.attn.{p}.weight" for p in "kovq"] or len(rows) == 4
    assert all(np.isfinite(r["std"]) and r["stable_rank"] > 1 for r in rows)
    text = repr(tab)
    assert "name" in text.splitlines()[1] and "layers.0.attn.q.weight" in text
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=260).print(tab)
    assert "layers.0.attn.q.weight" in buf.getvalue() and "stable_rank" in buf.getvalue()
    df = tab.to_pandas()
    assert list(df["name"]) == tab["name"]
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(UserError, match="pandas"):
        tab.to_pandas()
    assert tab.to_csv().splitlines()[0].startswith("name,layer,shape,dtype")
    with pytest.raises(UserError, match="no tensor matches"):
        m.stats("zzz*")
    assert len(m.layers[1].stats()) == 9


def test_by_layer_table_and_plot(m):
    tab = m.by_layer("stable_rank")
    assert tab.columns[:2] == ["layer", "attn.q"] and tab["layer"] == list(range(m.n_layers))
    q0 = m.stats("layers.0.attn.q")["stable_rank"][0]
    assert tab[0]["attn.q"] == pytest.approx(q0)
    assert "stable_rank by layer" in str(m.plot_by_layer("stable_rank", width=60, height=12))
    with pytest.raises(UserError, match="choose one of"):
        m.by_layer("nope")


def test_table_truncates():
    t = li.Table([{"i": i, "x": i / 3} for i in range(100)], title="many")
    text = repr(t)
    assert "... 60 more rows (100 in all)" in text and text.startswith("many")
    assert len(t.text(max_rows=None).splitlines()) == 103


def test_generate_stream_and_stats(m):
    out = m.generate("Once upon a time", max_new_tokens=6)
    assert isinstance(out, str) and out.stats.new_tokens == 6
    assert m._shared.opened.built
    it = m.generate("Once upon a time", stream=True, max_new_tokens=6)
    assert "".join(it) == out
    assert it.stats.stop_reason == "max_tokens"


def test_stitch_view_shares_engine(m):
    import torch

    v = m.stitch("0,1,1,3")
    assert v._shared is m._shared and v.plan is not None and len(v.plan) == 4
    assert "plan 0-1,1,3" in repr(v)
    ids = m.encode("The cat sat on the mat")
    with torch.inference_mode():
        ref = m.engine(torch.tensor([ids]), plan=v.plan)[0].numpy()
    np.testing.assert_allclose(v.logits(ids), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m.stitch("all").logits(ids), m.logits(ids), rtol=1e-5, atol=1e-5)
    assert not np.allclose(v.logits(ids), m.logits(ids))
    assert isinstance(v.generate("Hi", max_new_tokens=3), str)
    with pytest.raises(UserError):
        m.stitch("0-9")


def test_run_with_cache_and_attention(m):
    text = "Once upon a time there was"
    T = len(m.encode(text))
    acts = m.run_with_cache(text, sites=["resid_out", "attn_out.2"])
    assert set(acts) == {f"resid_out.{i}" for i in range(4)} | {"attn_out.2"}
    assert acts["resid_out.3"].shape == (T, 64) and isinstance(acts["resid_out.3"], np.ndarray)
    assert "resid_out.0" in repr(acts)
    att = m.attention(text)
    assert att.shape == (4, 4, T, T)
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)
    assert np.allclose(np.triu(att[0, 0], 1), 0)
    assert m.attention(text, layer=2).shape == (4, T, T)
    np.testing.assert_allclose(m.attention(text, layer=2), att[2], atol=1e-6)
    assert m.stitch("0,0").attention(text).shape == (2, 4, T, T)
    with pytest.raises(UserError, match="out of range"):
        m.attention(text, layer=7)


def test_evals(m, tmp_path):
    rows = [{"ctx": "The sun rises in the", "endings": ["east.", "sock drawer of a cat.", "x"], "label": 0},
            {"ctx": "Water is", "endings": ["wet.", "a kind of tuesday."], "label": 0}]
    res = m.eval_mc(rows)
    assert res.n == 2 and 0 <= res.acc <= 1
    assert m.stitch("0,1").eval_mc(rows, limit=1).n == 1
    ppl = m.perplexity("The history of the world is long and full of surprising events.")
    assert np.isfinite(ppl.ppl) and ppl.ppl > 1 and ppl.tokens > 5
    f = tmp_path / "t.txt"
    f.write_text("One document about cats.\n\n\nAnother about dogs and their owners.\n")
    assert m.perplexity(f).tokens > 5
    assert m.perplexity(str(f)).tokens > 5
    with pytest.raises(UserError, match="not found"):
        m.perplexity("missing.txt")


def test_gpt2_navigation(tiny_gpt2_dir):
    g = li.open(tiny_gpt2_dir)
    assert g.arch == "gpt2"
    q = g.layers[0].attn.q
    assert q.heads().ndim == 3
    assert q.bias is not None and q.bias.name == "layers.0.attn.q.bias"
    assert "positions" in dir(g.embed)
    assert isinstance(g.generate("Once", max_new_tokens=2), str)
