"""Cloze set builder and perplexity."""

from __future__ import annotations

import math

import pytest

from lminspect.documents import builtin_corpus
from lminspect.errors import UserError
from lminspect.evals.cloze import make_cloze, read_documents, split_sentences, write_jsonl


def test_split_sentences_keeps_abbreviations():
    s = split_sentences("Mr. Smith met Dr. Jones in St. Albans. They talked! Did W. Shakespeare write it? Yes.")
    assert s == ["Mr. Smith met Dr. Jones in St. Albans.", "They talked!", "Did W. Shakespeare write it?", "Yes."]


def test_builtin_corpus_is_small_and_real():
    p = builtin_corpus("eval")
    assert p.is_file() and p.stat().st_size < 2_000_000
    docs = read_documents("builtin")
    assert len(docs) > 40 and "Stratford" in docs[0]


def test_make_cloze_is_deterministic_and_well_formed(tmp_path):
    docs = read_documents("builtin")
    a = make_cloze(docs, n=200, seed=1)
    assert a == make_cloze(docs, n=200, seed=1)
    assert a != make_cloze(docs, n=200, seed=2)
    labels = {r["label"] for r in a}
    assert labels == {0, 1, 2, 3}
    for r in a:
        true = r["endings"][r["label"]]
        assert len(set(r["endings"])) == 4 and true not in r["ctx"]
        others = [e for i, e in enumerate(r["endings"]) if i != r["label"]]
        assert all(e not in docs[r["doc"]] for e in others)  # distractors come from other documents
    path = write_jsonl(a[:3], tmp_path / "c.jsonl")
    from lminspect.evals.mc import load_mc

    items = load_mc(path)
    assert [i.label for i in items] == [r["label"] for r in a[:3]]


def test_make_cloze_errors():
    with pytest.raises(UserError, match="two documents"):
        make_cloze(["One sentence here is long enough to count. Another sentence that is long enough too."], n=1)
    with pytest.raises(UserError, match="fewer than"):
        make_cloze(read_documents("builtin"), n=100000)


def test_perplexity_matches_transformers(tiny_llama_dir):
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    from lminspect.evals.perplexity import evaluate_perplexity
    from lminspect.models import load_model

    tok = Tokenizer.from_file(str(tiny_llama_dir / "tokenizer.json"))
    texts = read_documents(["Once upon a time there was a little model.", "It read many books and learned words."])
    model = load_model(str(tiny_llama_dir))
    res = evaluate_perplexity(model, tok, texts, ctx_len=16, eos=0)
    stream = []
    for t in texts:
        stream += tok.encode(t, add_special_tokens=False).ids + [0]
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    nll, n = 0.0, 0
    for i in range(0, len(stream), 16):
        w = stream[i : i + 16]
        if len(w) < 2:
            continue
        with torch.no_grad():
            out = hf(torch.tensor([w]), labels=torch.tensor([w]))
        nll += float(out.loss) * (len(w) - 1)
        n += len(w) - 1
    assert res.tokens == n
    assert res.ppl == pytest.approx(math.exp(nll / n), rel=1e-4)
    stitched = evaluate_perplexity(model, tok, texts, ctx_len=16, plan="0,3")
    assert stitched.ppl != pytest.approx(res.ppl)


def test_builtin_cloze_is_the_one_cloze_set():
    """``--eval cloze``, ``m.eval_mc("cloze")`` and ``m.sweep("cloze")`` all score ``builtin_cloze``."""
    from lminspect.evals.cloze import builtin_cloze
    from lminspect.evals.mc import load_mc

    items = builtin_cloze(7)
    assert len(items) == 7 and items == load_mc(make_cloze(read_documents("builtin:eval"), n=7, seed=0))
    assert builtin_cloze(7, seed=1) != items
