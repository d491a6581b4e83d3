"""Every engine feature on the Gemma / Phi-3 / GPT-NeoX / StableLM families: hook sites against
transformers' attention probabilities, the residual identity, DLA rows that add up (before
Gemma 2's final soft cap), plans, and ``stitch export`` read back by transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_models_families_more import build

from lminspect.lens import Target, direct_logit_attribution, logit_lens
from lminspect.models import LayerCall
from lminspect.models.layercall import full_plan

NAMES = ["gemma", "gemma2", "gemma3", "phi3-window-partial-tied", "gptneox-parallel", "gptneox-serial-nobias",
         "stablelm-qkbias-qknorm", "stablelm-parallel-tied"]
IDS = [5, 17, 42, 99, 7, 123, 64, 200, 11, 31, 250, 3]


@pytest.fixture(scope="module", params=NAMES)
def pair(request, tmp_path_factory):
    name = request.param
    hf, ours = build(tmp_path_factory.mktemp(name), name)
    return name, hf, ours


@torch.inference_mode()
def test_hook_sites_and_attention_probs_match_hf(pair):
    _, hf, ours = pair
    ids = torch.tensor([IDS])
    logits, acts = ours.run_with_cache(ids, ["resid_in", "attn_out", "mlp_out", "resid_out", "mlp_hidden",
                                             "attn_probs", "attn_z"])
    ref = hf(ids, output_attentions=True)
    assert (logits - ref.logits).abs().max().item() < 1e-4
    for p in range(ours.n_layers):
        x = acts[f"resid_in.{p}"] + acts[f"attn_out.{p}"] + acts[f"mlp_out.{p}"]
        torch.testing.assert_close(acts[f"resid_out.{p}"], x, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(acts[f"attn_probs.{p}"], ref.attentions[p], atol=1e-5, rtol=1e-4)
        assert acts[f"attn_z.{p}"].shape[2] == ours.layers[p].attn.n_head
        assert acts[f"mlp_hidden.{p}"].shape[-1] == ours.layers[p].mlp.down.in_features
    # a hook that replaces an activation changes the result like an edited forward would
    with ours.hooks(lambda n, t: t * 0, ["attn_out.0"]):
        zeroed = ours(ids)
    assert (zeroed - logits).abs().max().item() > 1e-3
    torch.testing.assert_close(zeroed, ours(ids, plan=[LayerCall(0, attn_scale=0.0)] + full_plan(ours.n_layers)[1:]),
                               atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_dla_rows_and_heads_add_up(pair):
    name, _, ours = pair
    res = direct_logit_attribution(ours, IDS, Target(42, "a"), baseline=Target(7, "b"))
    assert res.total == pytest.approx(res.logit, abs=1e-4)
    attn_bias = res.attn_bias
    np.testing.assert_allclose(res.heads.sum(1) + attn_bias, res.attn, atol=1e-4)
    out = ours(torch.tensor([IDS]))[0, -1]
    if ours.logit_softcap is not None:  # the rows split the logit before the cap; the cap is reported
        assert res.capped_logit == pytest.approx(float(out[42] - out[7]), abs=1e-4)
        c = ours.logit_softcap
        raw = ours.raw_logits(ours.run_with_cache(torch.tensor([IDS]), ["resid_out"])[1][
            f"resid_out.{ours.n_layers - 1}"])[0, -1]
        assert res.logit == pytest.approx(float(raw[42] - raw[7]), abs=1e-4)
        assert float(torch.tanh(raw[42] / c) * c - torch.tanh(raw[7] / c) * c) == pytest.approx(res.capped_logit,
                                                                                              abs=1e-4)
    else:
        assert res.capped_logit is None and res.logit == pytest.approx(float(out[42] - out[7]), abs=1e-4)
    lens = logit_lens(ours, IDS, k=3, target=Target(42, "t"))
    np.testing.assert_allclose(lens.top_probs[-1], torch.softmax(out, -1).topk(3).values.numpy(), atol=1e-6)


@torch.inference_mode()
def test_plans_head_ablation_and_decode(pair):
    _, _, ours = pair
    n = ours.n_layers
    H = ours.layers[1].attn.n_head
    ids = torch.tensor([IDS])
    ablated = [LayerCall(0), LayerCall(1, heads=tuple((h, 0.0) for h in range(H)))] + full_plan(n)[2:]
    has_o_bias = ours.layers[1].attn.o.bias is not None
    if not has_o_bias:  # no attention output left at all: the branch is zero
        zero = [LayerCall(0), LayerCall(1, attn_scale=0.0)] + full_plan(n)[2:]
        torch.testing.assert_close(ours(ids, plan=ablated), ours(ids, plan=zero), atol=1e-5, rtol=0)
    plan = [LayerCall(0), LayerCall(1), LayerCall(1, 0.5, 1.5)] + full_plan(n)[2:]
    full = ours(ids, plan=plan)
    cache = ours.new_cache(plan, batch_size=1, max_len=4)
    got = torch.cat([ours(ids[:, :6], cache=cache)] + [ours(ids[:, t:t + 1], cache=cache) for t in range(6, 12)], 1)
    torch.testing.assert_close(got, full, atol=1e-4, rtol=0)


def test_stitch_export_loads_in_transformers_with_the_same_logits(pair, tmp_path):
    from transformers import AutoModelForCausalLM

    from lminspect.models import load_model
    from lminspect.stitch import StitchedModel, export_stitched

    name, _, ours = pair
    spec = "0,1r2*0.5,2*attn=0.7*mlp=1.3*heads[0]=0,1*heads[1]=0.5" + (",3" if ours.n_layers > 3 else "")
    sm = StitchedModel(ours, spec)
    ids = torch.tensor([IDS])
    with torch.no_grad():
        expect = sm.forward(ids)
    out = tmp_path / "stitched"
    export_stitched(sm, None, out)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 5 + (ours.n_layers > 3)
    if "layer_types" in cfg:
        assert len(cfg["layer_types"]) == cfg["num_hidden_layers"]
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, expect, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(load_model(str(out))(ids), expect, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["gemma2", "phi3-window-partial-tied", "gptneox-parallel", "stablelm-qkbias-qknorm"])
def test_bf16_stored_decode_matches_dense(name, tmp_path):
    """bf16 checkpoints: decode steps read the stored bits (fused q/k/v and gate/up rows split from
    the raw tensors) and give what the dense float32 model gives."""
    from test_models_families_more import VARIANTS

    from lminspect.models import load_model
    from lminspect.models.packed import kernels

    if kernels() is None:
        pytest.skip("numba kernels not installed")
    torch.manual_seed(0)
    cfg, cls = VARIANTS[name]()
    cls(cfg).eval().to(torch.bfloat16).save_pretrained(tmp_path / name)
    dense = load_model(str(tmp_path / name), weights="float32")
    stored = load_model(str(tmp_path / name), weights="stored")
    assert stored.weights_label.startswith("stored BF16")
    ids = torch.tensor([IDS])
    outs = []
    with torch.inference_mode():
        for m in (dense, stored):
            cache = m.new_cache()
            outs.append(torch.cat([m(ids[:, :4], cache=cache)] + [m(ids[:, t:t + 1], cache=cache) for t in range(4, 12)],
                                  1))
    torch.testing.assert_close(outs[1], outs[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["gemma2", "gemma3", "phi3-window-partial-tied", "gptneox-parallel"])
def test_mc_token_trees_equal_one_forward_per_ending(name, tmp_path):
    """Batched multiple choice (token trees, windows by position, Gemma 3's local RoPE by position,
    soft caps on the eager path with ``q_from``) scores as one forward per ending does."""
    from conftest import make_tokenizer_json
    from test_evals_mc_batch import ITEMS
    from tokenizers import Tokenizer

    from lminspect.evals.mc import evaluate_mc

    _, ours = build(tmp_path, name)
    tok = Tokenizer.from_file(str(make_tokenizer_json(tmp_path, vocab_size=300)))
    full = evaluate_mc(ours, tok, ITEMS, mode="full")
    got = evaluate_mc(ours, tok, ITEMS, batch_size=3)
    for a, b in zip(got.items, full.items, strict=True):
        assert a.lls == pytest.approx(b.lls, abs=1e-4)


@torch.inference_mode()
def test_forward_from_continues_a_forward(pair):
    """Activation patching branches a shared prefix with ``forward_from``: sliding layers keep their
    window and Gemma 3's local RoPE there too."""
    _, _, ours = pair
    ids = torch.tensor([IDS])
    full, acts = ours.run_with_cache(ids, ["resid_in"])
    for p in range(ours.n_layers):
        torch.testing.assert_close(ours.forward_from(p, acts[f"resid_in.{p}"]), full, atol=1e-5, rtol=1e-5)
