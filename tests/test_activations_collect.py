"""The streaming pass on tiny models: correct numbers, padding, plans, resume == uninterrupted, flat memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from lminspect.activations import collect, diff, load  # noqa: E402

WORDS = "the model read many books and learned words while every layer added meaning to a story".split()


@pytest.fixture(scope="module")
def docs_jsonl(tmp_path_factory) -> Path:
    """Short documents of very different lengths, so batches carry padding."""
    rng = np.random.default_rng(0)
    p = tmp_path_factory.mktemp("docs") / "docs.jsonl"
    with p.open("w") as fh:
        for i in range(60):
            n = int(rng.integers(1, 40))
            fh.write(json.dumps({"text": " ".join(rng.choice(WORDS, n)), "id": i}) + "\n")
    return p


def test_stats_match_kept_tokens_and_engine(tiny_llama_dir, docs_jsonl, tmp_path):
    import torch

    from lminspect.models import load_model
    from lminspect.tokenizer import load_tokenizer
    from lminspect.weights import open_store

    out = tmp_path / "r"
    st = collect(str(tiny_llama_dir), out, data=str(docs_jsonl), tokens=700, seq_len=16, batch_size=4,
                 keep_tokens=True, keep_dtype="float32", outlier_k=4.0)
    assert st.complete and st.tokens == 700
    assert st.sites[:4] == ["resid_out.0", "attn_out.0", "mlp_out.0", "mlp_hidden.0"]
    assert len(st) == 4 * 4
    # streaming statistics == one-shot numpy over the kept token-level activations
    for site in ("resid_out.3", "mlp_hidden.1", "attn_out.0"):
        x = np.asarray(st.tokens_array(site), dtype=np.float64)
        s = st[site]
        assert x.shape == (700, s.dim)
        np.testing.assert_allclose(s.mean, x.mean(0), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(s.var, x.var(0), rtol=1e-4, atol=1e-10)
        c = x - x.mean(0)
        np.testing.assert_allclose(s.kurtosis, (c**4).mean(0) / x.var(0) ** 2, rtol=1e-3)
        np.testing.assert_array_equal(s.absmax, np.abs(x).max(0))
        sampled = s.hist.sum() + s.under + s.over  # every 4th token of each batch
        assert x.size / 4 <= sampled <= x.size / 4 + st.batches * s.dim
    hid = st["mlp_hidden.1"]
    x = np.asarray(st.tokens_array("mlp_hidden.1"))
    np.testing.assert_allclose(hid.fire_freq, (x > 0).mean(0))
    # kept tokens == the engine's own activations for the first document alone (padding dropped)
    lm = load_model(str(tiny_llama_dir))
    tok = load_tokenizer(open_store(str(tiny_llama_dir)))
    first = json.loads(docs_jsonl.read_text().splitlines()[0])["text"]
    ids = tok.encode(first)[:16]
    _, cache = lm.run_with_cache(torch.tensor([ids]), sites=["resid_out.3"])
    np.testing.assert_allclose(np.asarray(st.tokens_array("resid_out.3"))[: len(ids)], cache["resid_out.3"][0].numpy(),
                               rtol=1e-4, atol=1e-5)
    pos = np.load(out / "tokens" / "pos.npy")
    nxt = (0, 16) if len(tok.encode(first)) > 16 else (1, 0)
    assert tuple(pos[0]) == (0, 0) and tuple(pos[len(ids)]) == nxt
    # derived arrays for plain np.load users
    assert np.load(out / "arrays" / "mlp_hidden.fire_freq.npy").shape == (4, hid.dim)


def test_resume_equals_uninterrupted(tiny_llama_dir, docs_jsonl, tmp_path):
    kw = dict(data=str(docs_jsonl), tokens=600, seq_len=16, batch_size=3, keep_tokens=True, save_every=60)
    full = collect(str(tiny_llama_dir), tmp_path / "full", **kw)
    part = collect(str(tiny_llama_dir), tmp_path / "part", max_batches=4, **kw)
    assert not part.complete and part.batches == 4
    part2 = collect(str(tiny_llama_dir), tmp_path / "part", max_batches=3, **kw)  # resumes, still partial
    assert part2.batches == 7
    done = collect(str(tiny_llama_dir), tmp_path / "part", **kw)
    assert done.complete and done.tokens == full.tokens and done.batches == full.batches
    for site in full.sites:
        a, b = full[site], done[site]
        for f in ("mean", "var", "kurtosis", "min", "max", "outlier_counts", "hist", "fire_freq"):
            va, vb = getattr(a, f), getattr(b, f)
            if va is None:
                continue
            np.testing.assert_allclose(va, vb, rtol=1e-12, atol=0, err_msg=f"{site}.{f}")
        np.testing.assert_array_equal(a._acc.top_pos, b._acc.top_pos)
    np.testing.assert_array_equal(full.tokens_array("mlp_out.2"), done.tokens_array("mlp_out.2"))
    np.testing.assert_array_equal(full.token_ids(), done.token_ids())


def test_plan_positions_and_diff(tiny_llama_dir, tmp_path):
    base = collect(str(tiny_llama_dir), tmp_path / "base", tokens=400, seq_len=32, batch_size=4,
                   sites=["resid", "mlp_hidden"])
    st = collect(str(tiny_llama_dir), tmp_path / "st", tokens=400, seq_len=32, batch_size=4, plan="0-2,2,3",
                 sites=["resid_out", "mlp_hidden.4"])
    assert st.plan_layers == [0, 1, 2, 2, 3]
    assert "resid_out.4" in st and "mlp_hidden.4" in st and "mlp_hidden.0" not in st
    assert st["resid_out.3"].layer == 2
    assert st.kind("resid_out").mean.shape == (5, 64)
    rows = diff(st, base)
    by = {r["site"]: r for r in rows}
    assert by["resid_out.0"]["mean_shift"] == pytest.approx(0.0, abs=1e-9)  # same layer 0 on the same tokens
    assert by["resid_out.0"]["var_ratio"] == pytest.approx(1.0)
    assert by["resid_out.3"]["mean_shift"] > 0 and (by["resid_out.3"]["layer_a"], by["resid_out.3"]["layer_b"]) == (2, 3)
    assert "resid_out.4" not in by  # the baseline has positions 0..3 only


@pytest.mark.parametrize("fixture", ["tiny_gpt2_dir", "tiny_falcon_dir"])
def test_other_families(fixture, request, tmp_path):
    d = request.getfixturevalue(fixture)
    st = collect(str(d), tmp_path / "r", tokens=300, seq_len=32, batch_size=4)
    assert st.complete and st.tokens == 300
    assert np.isfinite(st["resid_out.0"].var).all()
    assert st["mlp_hidden.0"].dim == 4 * 64


def test_peak_rss_flat_in_tokens(tiny_llama_dir, tmp_path):
    """Peak RSS of a 2k-token and a 24k-token run (kept tokens too) differ by little."""
    code = textwrap.dedent("""
        import resource, sys
        import torch
        torch.set_num_threads(1)
        from lminspect.activations import collect
        collect(sys.argv[1], sys.argv[2], tokens=int(sys.argv[3]), seq_len=64, batch_size=8, keep_tokens=True,
                keep_dtype="float32", save_every=0)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """)
    rss = []
    for n in (2_000, 24_000):
        r = subprocess.run([sys.executable, "-c", code, str(tiny_llama_dir), str(tmp_path / f"r{n}"), str(n)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        rss.append(int(r.stdout.strip().splitlines()[-1]))
        kept = (tmp_path / f"r{n}" / "tokens" / "resid_out.3.npy").stat().st_size
        assert kept >= n * 64 * 4
    # 24k tokens of kept float32 activations are ~25 MB across 16 sites; RSS must not follow them
    assert rss[1] - rss[0] < 12 * 1024, rss  # KiB


def test_load_partial_and_repr(tiny_llama_dir, tmp_path):
    st = collect(str(tiny_llama_dir), tmp_path / "r", tokens=5000, seq_len=32, batch_size=2, max_batches=2,
                 sites=["mlp_hidden"])
    again = load(tmp_path / "r")
    assert not again.complete and again.tokens == 128
    text = repr(again)
    assert "partial" in text and "mlp_hidden.0" in text and "dead=" in text
    assert st["mlp_hidden.0"].dead is not None
