"""Multiple-choice scoring: shared-context KV scoring equals the harness way on a transformers oracle."""

from __future__ import annotations

import json

import pytest

from lminspect.errors import UserError
from lminspect.evals.mc import (
    MCItem,
    encode_pair,
    evaluate_mc,
    hellaswag_item,
    load_mc,
    make_encoder,
    preprocess_hellaswag,
    score_item,
)

ITEMS = [
    MCItem("Once upon a time there was a little model.", ["It read many books.", "The weights were small.",
                                                          "In the end it could finish a sentence.", "Every"], 0),
    MCItem("The weights were small but", ["the stories were long.", "a layer.", "model model model", "words"], 0),
    MCItem("Every layer added", ["a little more meaning.", "books", "sometimes even a story.", "time there was"], 0),
]


def harness_lls(hf_model, encode, item: MCItem) -> list[float]:
    """lm-evaluation-harness's HFLM: one full ctx+continuation forward per ending."""
    import torch

    out = []
    for e in item.endings:
        ctx, cont = encode_pair(encode, item.ctx, " " + e)
        ids = torch.tensor([ctx + cont])
        with torch.no_grad():
            logits = hf_model(ids).logits[0].float()
        lp = torch.log_softmax(logits, -1)[len(ctx) - 1 : -1]
        out.append(float(lp.gather(1, torch.tensor(cont)[:, None]).sum()))
    return out


def _tok(dirpath):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(dirpath / "tokenizer.json"))


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt2_dir"])
def test_shared_context_equals_harness_oracle(fixture, request):
    import torch
    from transformers import AutoModelForCausalLM

    from lminspect.models import load_model

    d = request.getfixturevalue(fixture)
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    model = load_model(str(d))
    encode = make_encoder(_tok(d))
    for item in ITEMS:
        ref = harness_lls(hf, encode, item)
        shared, _ = score_item(model, encode, item, mode="shared")
        full, _ = score_item(model, encode, item, mode="full")
        assert shared.lls == pytest.approx(ref, abs=2e-4, rel=1e-4)
        assert full.lls == pytest.approx(ref, abs=2e-4, rel=1e-4)


def test_plan_changes_scores_and_matches_full(tiny_llama_dir):
    from lminspect.models import load_model
    from lminspect.stitch import parse_plan

    model = load_model(str(tiny_llama_dir))
    encode = make_encoder(_tok(tiny_llama_dir))
    plan = parse_plan("0,1r2,3*0.5", 4)
    a, _ = score_item(model, encode, ITEMS[0], plan=plan, mode="shared")
    b, _ = score_item(model, encode, ITEMS[0], plan=plan, mode="full")
    base, _ = score_item(model, encode, ITEMS[0])
    assert a.lls == pytest.approx(b.lls, abs=1e-4)
    assert a.lls != pytest.approx(base.lls, abs=1e-4)


def test_metrics_and_normalisation():
    from lminspect.evals.mc import _finish

    item = MCItem("c", ["ab", "abcdef", "é"], 1)
    s = _finish(item, [-3.0, -4.0, -2.5], [1, 2, 1])
    assert s.pred == 2  # raw ll
    assert s.pred_norm == 1  # -4/6 beats -3/2 and -2.5/1 (characters)
    assert s.pred_bytes == 1  # é is 2 bytes: -1.25


def test_evaluate_mc_counts(tiny_llama_dir):
    from lminspect.models import load_model

    model = load_model(str(tiny_llama_dir))
    seen = []
    res = evaluate_mc(model, _tok(tiny_llama_dir), ITEMS, progress=lambda k, n: seen.append((k, n)))
    assert res.n == 3 and 0.0 <= res.acc <= 1.0 and res.tokens > 0 and res.seconds > 0
    assert seen[-1] == (3, 3)
    d = res.as_dict(with_items=True)
    assert len(d["items"]) == 3 and "items_per_s" in d


def test_encode_pair_moves_trailing_space():
    enc = make_encoder(lambda s: [ord(c) for c in s])
    ctx, cont = encode_pair(enc, "abc ", "d")
    assert ctx == [97, 98, 99] and cont == [32, 100]


def test_hellaswag_preprocessing():
    assert preprocess_hellaswag("How to wash a dog [title] Get a tub. [step] Fill it.") == \
        "How to wash a dog. Get a tub. Fill it."
    row = {"ind": 4, "activity_label": "Dog", "ctx_a": "A man washes a dog.", "ctx_b": "the dog",
           "endings": ["runs away [step] fast.", "sits."], "label": "1"}
    item = hellaswag_item(row)
    assert item.ctx == "Dog: A man washes a dog. The dog"
    assert item.endings == ["runs away fast.", "sits."] and item.label == 1 and item.id == "4"


def test_load_mc_files(tmp_path):
    rows = [{"ctx": "a", "endings": ["b", "c"], "label": 1}] * 3
    p = tmp_path / "x.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    assert len(load_mc(p)) == 3 and len(load_mc(p, limit=2)) == 2
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "x.parquet")
    assert load_mc(tmp_path / "x.parquet")[0].endings == ["b", "c"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ctx": "a", "endings": ["b"], "label": 0}\n')
    with pytest.raises(UserError, match="at least two"):
        load_mc(bad)
    bad.write_text('{"ctx": "a", "endings": ["b", "c"], "label": 5}\n')
    with pytest.raises(UserError, match="out of range"):
        load_mc(bad)
    bad.write_text("{oops\n")
    with pytest.raises(UserError, match="bad.jsonl:1"):
        load_mc(bad)
    with pytest.raises(UserError, match="not found"):
        load_mc(tmp_path / "missing.jsonl")


def test_hub_dataset_offline_is_one_line_error():
    with pytest.raises(UserError) as ei:
        load_mc("Rowan/hellaswag", limit=2)
    assert "Rowan/hellaswag" in ei.value.message and "\n" not in ei.value.message


def test_hellaswag_hub_rows_through_the_real_datasets_library(tmp_path, monkeypatch):
    """``load_mc("hf:...")`` with the real ``datasets``: a local folder laid out like the hub's
    Rowan/hellaswag (parquet, string labels), preprocessed as the harness does."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # read at import
    rows = [{"ind": 7 + k, "activity_label": "Baking cookies", "ctx_a": "A woman puts dough on a tray.",
             "ctx_b": "she", "endings": ["bakes it [title] well.", "eats the tray.", "sings.", "leaves."],
             "label": str(k % 4), "split": "val"} for k in range(3)]
    (tmp_path / "repo" / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "repo" / "data" / "validation-00000-of-00001.parquet")
    items = load_mc(f"hf:{tmp_path / 'repo'}", split="validation", limit=2)
    assert [i.label for i in items] == [0, 1] and items[0].id == "7"
    assert items[0].ctx == "Baking cookies: A woman puts dough on a tray. She"
    assert items[0].endings[0] == "bakes it. well."


@pytest.mark.smollm2
@pytest.mark.xdist_group("smollm2")
def test_smollm2_matches_transformers_harness_way(smollm2_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from lminspect.evals.cloze import make_cloze, read_documents
    from lminspect.models import load_model
    from lminspect.tokenizer import load_tokenizer
    from lminspect.weights import open_store

    store = open_store(str(smollm2_dir))
    model = load_model(store)
    tok = load_tokenizer(store)
    hf = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    encode = make_encoder(tok)
    items = [MCItem(**{k: r[k] for k in ("ctx", "endings", "label")}) for r in make_cloze(read_documents("builtin"), n=3)]
    for item in items:
        ref = harness_lls(hf, encode, item)
        got, _ = score_item(model, encode, item)
        assert got.lls == pytest.approx(ref, abs=2e-3, rel=1e-4)
