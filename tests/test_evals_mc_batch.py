"""Batched multiple-choice scoring: padded batches of items, the plan prefix tree, stderr.

Everything is checked against one-at-a-time, one-forward-per-ending scoring (``mode="full"``,
the harness way), which tests/test_evals_mc.py checks against transformers."""

from __future__ import annotations

import statistics

import pytest
import torch

from lminspect.evals.mc import MCItem, evaluate_mc, make_encoder
from lminspect.evals.mc_batch import PlanTree, make_request, plan_batches, score_requests, token_tree

# very different context and ending lengths, so one batch is mostly padding for some rows; endings that
# share their first words (one token tree node for both)
ITEMS = [
    MCItem("Hi", ["there.", "a very long ending that goes on and on for many tokens indeed", "x"], 0),
    MCItem("Once upon a time there was a little model that read many books about layers, weights and "
           "the stories people told about them late at night.", ["It slept.", "The end.", "and then?"], 1),
    MCItem("The weights were small but", ["the stories were long.", "a layer.", "model model model", "w"], 2),
    MCItem("Every layer added", ["a little more meaning.", "books"], 1),
    MCItem("The model said", ["the weights were small.", "the weights were large.", "the end", "nothing"], 1),
]


def _tok(dirpath):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(dirpath / "tokenizer.json"))


def _model(d):
    from lminspect.models import load_model

    return load_model(str(d))


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt2_dir", "tiny_falcon_dir"])
def test_padded_batches_equal_one_at_a_time(fixture, request):
    d = request.getfixturevalue(fixture)
    model, tok = _model(d), _tok(d)
    full = evaluate_mc(model, tok, ITEMS, mode="full")
    for bs in (1, 3, len(ITEMS), None):
        got = evaluate_mc(model, tok, ITEMS, batch_size=bs)
        for a, b in zip(got.items, full.items, strict=True):
            assert a.lls == pytest.approx(b.lls, abs=1e-4), bs
            assert (a.pred, a.pred_norm, a.pred_bytes) == (b.pred, b.pred_norm, b.pred_bytes)


def test_stitched_plan_batched_equals_full(tiny_llama_dir):
    model, tok = _model(tiny_llama_dir), _tok(tiny_llama_dir)
    plan = "0,1r2,3*0.5"
    full = evaluate_mc(model, tok, ITEMS, plan=plan, mode="full")
    got = evaluate_mc(model, tok, ITEMS, plan=plan, batch_size=len(ITEMS))
    base = evaluate_mc(model, tok, ITEMS, batch_size=len(ITEMS))
    for a, b, c in zip(got.items, full.items, base.items, strict=True):
        assert a.lls == pytest.approx(b.lls, abs=1e-4)
        assert a.lls != pytest.approx(c.lls, abs=1e-4)  # the plan changes the scores
    from lminspect.stitch import parse_plan

    assert got.layer_calls == len(parse_plan(plan, 4))  # one batch: each call once


def test_pad_argument_matches_unpadded_rows(tiny_llama_dir):
    model = _model(tiny_llama_dir)
    a, b = [5, 9, 14, 3, 7, 22], [11, 4, 8]
    ids = torch.tensor([a, [0] * 3 + b])
    with torch.inference_mode():
        got = model(ids, pad=torch.tensor([0, 3]))
        ref_a, ref_b = model(torch.tensor([a])), model(torch.tensor([b]))
    assert torch.allclose(got[0], ref_a[0], atol=1e-5)
    assert torch.allclose(got[1, 3:], ref_b[0], atol=1e-5)


def test_kv_select_copies_rows(tiny_llama_dir):
    model = _model(tiny_llama_dir)
    cache = model.new_cache(batch_size=2, max_len=8)
    with torch.inference_mode():
        model(torch.tensor([[1, 2, 3], [4, 5, 6]]), cache=cache)
    sel = cache.select(torch.tensor([1, 1, 0]), max_len=6)
    assert sel.batch_size == 3 and sel.pos == 3 and sel.capacity == 6
    assert torch.equal(sel.k[0][0, :, :3], cache.k[0][1, :, :3])
    assert torch.equal(sel.v[2][2, :, :3], cache.v[2][0, :, :3])


def test_sweep_tree_shares_calls_and_scores_identically(tiny_llama_dir):
    from lminspect.evals.mc import _requests
    from lminspect.stitch import parse_plan

    model, tok = _model(tiny_llama_dir), _tok(tiny_llama_dir)
    encode = make_encoder(tok)
    specs = {"full": "0-3", "skip3": "0-2", "rep": "0-2,2,3", "late": "1-3"}
    plans = {k: parse_plan(v, 4) for k, v in specs.items()}
    reqs = [make_request(_requests(it, encode, None)) for it in ITEMS]
    shared, st = score_requests(model, reqs, plans, batch_size=2)
    assert st.batches == 3
    # tree edges: 0,1,2,3 | 3 after 0-2 ends there, rep: 2,3 | 1,2,3 -> 4 + 2 + 3 = 9 per batch
    assert st.calls_run == 3 * 9 and st.calls_named == 3 * (4 + 3 + 5 + 3)
    assert set(st.plan_seconds) == set(specs) and all(v > 0 for v in st.plan_seconds.values())
    assert sum(st.plan_seconds.values()) <= st.seconds  # attributed shares of the measured time
    tree = PlanTree.build(plans)
    assert sorted(tree.below) == sorted(specs) and tree.children[plans["late"][0]].below == ["late"]
    for name, spec in specs.items():
        alone = evaluate_mc(model, tok, ITEMS, plan=spec, batch_size=2)
        assert [s.lls for s in alone.items] == shared[name]  # same batches, same ops: bit for bit


def test_plan_tree_and_batches():
    from lminspect.models.layercall import LayerCall as C

    tree = PlanTree.build({"a": [C(0), C(1)], "b": [C(0), C(2)], "c": [C(0)], "d": [C(0), C(1)]})
    assert tree.n_calls() == 3
    assert tree.children[C(0)].ends == ["c"] and tree.children[C(0)].children[C(1)].ends == ["a", "d"]
    from lminspect.evals.mc_batch import Request

    trees = [token_tree(Request([1] * n, [[2, 3]], [1])) for n in (3, 9, 5, 7)]
    assert plan_batches(trees, 2) == [[1, 3], [2, 0]]  # largest trees first
    assert sorted(i for b in plan_batches(trees, None) for i in b) == [0, 1, 2, 3]


def test_auto_batches_by_device():
    from lminspect.evals.mc_batch import AUTO_ACCEL, AUTO_CPU, Request

    trees = [token_tree(Request([1] * n, [[2, 3]], [1])) for n in (100, 99, 90, 50)]  # 101, 100, 91, 51 nodes
    assert plan_batches(trees, None, AUTO_CPU) == [[0, 1], [2], [3]]  # at most 3% padding on a CPU
    assert plan_batches(trees, None, AUTO_ACCEL) == [[0, 1, 2, 3]]  # 15% padding is worth it on a GPU
    assert plan_batches(trees, None, (250, 0.5)) == [[0, 1], [2, 3]]  # and the token budget holds


def test_token_tree_stores_shared_ending_tokens_once():
    from lminspect.evals.mc_batch import Request

    # prefix [1, 2]; endings 3 4 5 | 3 4 6 | 7: "3 4" is shared by the first two endings
    t = token_tree(Request([1, 2], [[3, 4, 5], [3, 4, 6], [7]], [3, 3, 1]))
    assert t.tokens == [1, 2, 3, 4]  # last ending tokens are never inputs; 3 and 4 stored once
    assert t.positions == [0, 1, 2, 3] and t.parents == [-1, 0, 1, 2]
    assert t.heads == [1, 2, 3]  # node 1 (token 2) predicts 3 and 7; node 3 predicts both 5 and 6
    assert t.scored == [(0, 3, 0), (1, 4, 0), (2, 5, 0), (0, 3, 1), (1, 4, 1), (2, 6, 1), (0, 7, 2)]
    branch = token_tree(Request([1], [[3, 4, 5], [8, 9]], [2, 1]))
    assert branch.tokens == [1, 3, 4, 8] and branch.parents == [-1, 0, 1, 0] and branch.positions == [0, 1, 2, 1]
    assert branch.heads == [1, 2, 3] and branch.scored == [(0, 4, 0), (1, 5, 0), (2, 9, 1)]


def test_stderr_is_sample_std_over_sqrt_n(tiny_llama_dir):
    model, tok = _model(tiny_llama_dir), _tok(tiny_llama_dir)
    res = evaluate_mc(model, tok, ITEMS)
    hits = [float(s.pred == s.label) for s in res.items]
    norm = [float(s.pred_norm == s.label) for s in res.items]
    assert res.acc_stderr == pytest.approx(statistics.stdev(hits) / len(hits) ** 0.5)
    assert res.acc_norm_stderr == pytest.approx(statistics.stdev(norm) / len(norm) ** 0.5)
    assert res.as_dict()["acc_stderr"] == res.acc_stderr
