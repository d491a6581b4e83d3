"""StitchedModel forwards and exported directories: lminspect == transformers on the stitched model."""

from __future__ import annotations

import json

import pytest

PLAN = "0,1r2,3*0.5,2*attn=0.7*mlp=1.3"


@pytest.mark.parametrize("fixture, n", [("tiny_llama_dir", 4), ("tiny_llama_tied_dir", 4), ("tiny_gpt2_dir", 3)])
def test_export_matches_stitched_forward_in_transformers(fixture, n, request, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from lminspect.models import load_model
    from lminspect.stitch import StitchedModel, export_stitched, parse_plan

    src = request.getfixturevalue(fixture)
    model = load_model(str(src))
    spec = PLAN if n == 4 else "0,1r2*0.5,2*attn=0.7"
    sm = StitchedModel(model, spec)
    ids = torch.tensor([[5, 17, 42, 99, 3, 250, 7]])
    with torch.no_grad():
        ours = sm.forward(ids)
    out = tmp_path / "stitched"
    tj = (src / "tokenizer.json").read_text()
    export_stitched(sm, None, out, tokenizer_json=tj)
    cfg = json.loads((out / "config.json").read_text())
    layers_key = "n_layer" if "gpt2" in fixture else "num_hidden_layers"
    assert cfg[layers_key] == len(parse_plan(spec, n)) and cfg["lminspect_plan"]
    assert (out / "tokenizer.json").read_text() == tj
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = hf(ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    again = load_model(str(out))
    with torch.no_grad():
        torch.testing.assert_close(again.forward(ids), ours, atol=1e-5, rtol=1e-5)


def test_stitched_model_view_shares_weights(tiny_llama_dir):
    import torch

    from lminspect.models import load_model
    from lminspect.stitch import StitchedModel, describe_plan, parse_plan

    model = load_model(str(tiny_llama_dir))
    sm = StitchedModel(model, "0-1,1,3")
    assert sm.layers is model.layers and sm.n_layers == 4
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        a = sm.forward(ids)
        b = model.forward(ids, plan=parse_plan("0-1,1,3", 4))
        cache = sm.new_cache()
        c = sm.forward(ids, cache=cache)
    assert torch.equal(a, b) and torch.allclose(a, c, atol=1e-5)
    assert len(cache.k) == 4
    s = describe_plan(sm.plan, model=model)
    assert 0.5 < s.params_touched < 1.0 and s.skipped == [2]
    assert "0-1,1,3" in repr(sm)
