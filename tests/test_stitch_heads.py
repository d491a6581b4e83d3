"""Head-level ablation in plans: the grammar (``7*heads[0,3]=0``, ``*kv[1]=0``), the YAML form
(``head_scale``), and every consumer honouring it (forward, generation, MC scores, export)."""

from __future__ import annotations

import json

import pytest
import torch

from lminspect.errors import UserError
from lminspect.models import LayerCall, load_model
from lminspect.stitch import describe_plan, export_stitched, load_plans, parse_plan, plan_to_string

IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7]])


@pytest.fixture(scope="module")
def lm(tiny_llama_dir):
    return load_model(str(tiny_llama_dir))


@pytest.mark.parametrize("spec, calls", [
    ("2*heads[0,3]=0", [LayerCall(2, heads=((0, 0.0), (3, 0.0)))]),
    ("1-2*heads[1-2]=0.5", [LayerCall(i, heads=((1, 0.5), (2, 0.5))) for i in (1, 2)]),
    ("1*kv[1]=0*attn=0.5", [LayerCall(1, attn_scale=0.5, kv_heads=((1, 0.0),))]),
    ("0r2*heads[0]=0*heads[0]=2", [LayerCall(0, heads=((0, 2.0),))] * 2),
    ("3*heads[1]=1", [LayerCall(3)]),
])
def test_grammar_and_round_trip(spec, calls):
    plan = parse_plan(spec, 4)
    assert plan == calls
    assert parse_plan(plan_to_string(plan, 4), 4) == plan


def test_printing_groups_heads_by_scale():
    plan = [LayerCall(0), LayerCall(1, heads=((0, 0.0), (1, 0.0), (2, 0.0), (5, 0.5)), kv_heads=((1, 0.0),))]
    assert plan_to_string(plan) == "0,1*heads[0-2]=0*heads[5]=0.5*kv[1]=0"
    assert describe_plan(plan, 4).scaled == 1


@pytest.mark.parametrize("spec, needle", [
    ("0,2*heads[]=0", "empty head list"),
    ("0,2*heads[x]=0", "column 3"),
    ("0,2*heads[1]", "bad scale '*heads[1]'"),
    ("0,2*heads[1-]=0", "bad head list"),
])
def test_grammar_errors_name_item_and_column(spec, needle):
    with pytest.raises(UserError) as e:
        parse_plan(spec, 4)
    assert needle in e.value.message


def test_yaml_head_scale(tmp_path):
    f = tmp_path / "plan.yaml"
    f.write_text("slices:\n  - layer_range: [0, 2]\n  - layer_range: [2, 3]\n    head_scale: {0: 0, 3: 0.5}\n"
                 "  - layer_range: [3, 4]\n    kv_head_scale: [1, 0]\n")
    plan = parse_plan(str(f), 4)
    assert plan[2] == LayerCall(2, heads=((0, 0.0), (3, 0.5)))
    assert plan[3] == LayerCall(3, kv_heads=((1, 0.0),))
    bad = tmp_path / "bad.yaml"
    bad.write_text("slices:\n  - layer_range: [0, 2]\n    head_scale: 0.5\n")
    with pytest.raises(UserError, match="head_scale must map head numbers"):
        parse_plan(str(bad), 4)
    named = tmp_path / "plans.yaml"
    named.write_text("plans:\n  base: all\n  no_heads_1: '0,1*heads[0-3]=0,2-3'\n")
    assert load_plans(str(named), 4)["no_heads_1"][1].heads == tuple((h, 0.0) for h in range(4))


def test_all_heads_in_grammar_equals_attn_zero(lm):
    with torch.inference_mode():
        a = lm(IDS, plan=parse_plan("0,1*heads[0-3]=0,2-3", 4))
        b = lm(IDS, plan=parse_plan("0,1*attn=0,2-3", 4))
        c = lm(IDS, plan=parse_plan("0,1*kv[0,1]=0,2-3", 4))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    torch.testing.assert_close(c, b, rtol=0, atol=1e-6)


def test_generation_and_scores_honour_head_scales(lm, tiny_llama_dir):
    from lminspect.evals.mc import MCItem, evaluate_mc
    from lminspect.generate import greedy_ids
    from lminspect.tokenizer import load_tokenizer
    from lminspect.weights import open_store

    heads = parse_plan("0,1*heads[0-3]=0,2-3", 4)
    zero = parse_plan("0,1*attn=0,2-3", 4)
    assert greedy_ids(lm, IDS[0].tolist(), 8, plan=heads) == greedy_ids(lm, IDS[0].tolist(), 8, plan=zero)
    tok = load_tokenizer(open_store(str(tiny_llama_dir)))
    items = [MCItem("Once upon a time", ["there was a model.", "the end.", "words"], 0),
             MCItem("The weights were", ["small.", "long stories.", "many"], 0)]
    a = evaluate_mc(lm, tok, items, plan=heads)
    b = evaluate_mc(lm, tok, items, plan=zero)
    base = evaluate_mc(lm, tok, items)
    for x, y, z in zip(a.items, b.items, base.items, strict=True):
        assert x.lls == pytest.approx(y.lls, abs=1e-4)
        assert x.lls != pytest.approx(z.lls, abs=1e-4)


@pytest.mark.parametrize("fixture, n, spec", [
    ("tiny_llama_dir", 4, "0,1r2*heads[1,3]=0.5,2*kv[0]=0*attn=0.7,3"),
    ("tiny_gpt2_dir", 3, "0*heads[2]=0,1r2*heads[0]=0.25,2"),
])
def test_export_folds_head_scales_into_o_proj(fixture, n, spec, request, tmp_path):
    from transformers import AutoModelForCausalLM

    src = request.getfixturevalue(fixture)
    model = load_model(str(src))
    plan = parse_plan(spec, n)
    with torch.inference_mode():
        ours = model(IDS, plan=plan)
    out = tmp_path / "exported"
    export_stitched(model, plan, out)
    assert "heads[" in json.loads((out / "config.json").read_text())["lminspect_plan"]
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = hf(IDS).logits
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)
    with torch.inference_mode():  # and the heads really changed something
        plain = [LayerCall(c.index, c.attn_scale, c.mlp_scale) for c in plan]
        assert not torch.allclose(model(IDS, plan=plain), ours, atol=1e-4)
