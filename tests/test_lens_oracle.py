"""Logit lens, direct logit attribution and activation patching against HF transformers with
plain forward hooks (the oracle), on the tiny Llama (GQA), GPT-2 and Falcon-RW models."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import hf_patch_reference as ref  # noqa: E402

from lminspect.lens import (  # noqa: E402
    Metric,
    Target,
    activation_patching,
    direct_logit_attribution,
    logit_lens,
)
from lminspect.models import load_model  # noqa: E402

CLEAN = [5, 17, 42, 99, 7, 123, 64, 200, 11, 31]
CORRUPT = [5, 17, 42, 98, 7, 124, 64, 200, 11, 31]  # differs at tokens 3 and 5


@pytest.fixture(scope="module", params=["llama", "gpt2", "falcon"])
def pair(request, tiny_llama_dir, tiny_gpt2_dir, tiny_falcon_dir):
    from transformers import AutoModelForCausalLM

    path = {"llama": tiny_llama_dir, "gpt2": tiny_gpt2_dir, "falcon": tiny_falcon_dir}[request.param]
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    return request.param, load_model(str(path)), hf


def test_logit_lens_matches_hf_layer_outputs(pair):
    _, lm, hf = pair
    tgt = Target(42, "t")
    res = logit_lens(lm, CLEAN, k=5, target=tgt)
    p = ref.parts(hf)
    outs = []
    hooks = [b.register_forward_hook(lambda m, a, o: outs.append(ref._first(o)[0, -1])) for b in p["layers"]]
    with torch.no_grad():
        emb = ref.capture(hf, torch.tensor([CLEAN]), "resid")[1][0][0, -1]
        outs.clear()
        final = hf(torch.tensor([CLEAN])).logits[0, -1]
    for h in hooks:
        h.remove()
    with torch.no_grad():
        probs = torch.softmax(p["head"](p["norm"](torch.stack([emb, *outs]))), -1)
    assert len(res.labels) == len(outs) + 1
    np.testing.assert_allclose(res.target_prob, probs[:, 42].numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(res.top_probs, probs.topk(5).values.numpy(), rtol=1e-4, atol=1e-6)
    # the last read-out is the model's own prediction
    np.testing.assert_allclose(res.top_probs[-1], torch.softmax(final, -1).topk(5).values.numpy(), rtol=1e-4, atol=1e-6)
    assert res.target_rank[-1] == int((final > final[42]).sum()) + 1


def test_dla_matches_hf_components_and_sums_to_the_logit(pair):
    arch, lm, hf = pair
    tgt, base = Target(42, "a"), Target(7, "b")
    res = direct_logit_attribution(lm, CLEAN, tgt, baseline=base)
    assert res.total == pytest.approx(res.logit, abs=1e-4)
    p = ref.parts(hf)
    ids = torch.tensor([CLEAN])
    _, attn = ref.capture(hf, ids, "attn")
    _, mlp = ref.capture(hf, ids, "mlp")
    _, z = ref.capture(hf, ids, "head")
    _, resid_in = ref.capture(hf, ids, "resid")
    norm_in = []
    h = p["norm"].register_forward_pre_hook(lambda m, a: norm_in.append(a[0][0, -1]))
    with torch.no_grad():
        logits = hf(ids).logits[0, -1]
    h.remove()
    x = norm_in[0]
    w = p["norm"].weight
    d = p["head"].weight[42] - p["head"].weight[7]
    if arch == "llama":
        scale = torch.rsqrt(x.pow(2).mean() + p["norm"].variance_epsilon)

        def direct(c):
            return float(((w * c * scale) @ d).detach())
    else:
        scale = 1 / torch.sqrt(x.var(unbiased=False) + p["norm"].eps)

        def direct(c):
            return float(((w * (c - c.mean()) * scale) @ d).detach())
    assert res.logit == pytest.approx(float(logits[42] - logits[7]), abs=1e-4)
    assert res.embed == pytest.approx(direct(resid_in[0][0, -1]), abs=1e-4)
    np.testing.assert_allclose(res.attn, [direct(a[0, -1]) for a in attn], atol=1e-4)
    np.testing.assert_allclose(res.mlp, [direct(m[0, -1]) for m in mlp], atol=1e-4)
    n_head = lm.layers[0].attn.n_head
    for layer, zl in enumerate(z):
        o = p["o"](p["layers"][layer])
        wo = o.weight if arch != "gpt2" else o.weight.t()  # GPT-2's Conv1D stores [in, out]
        hd = zl.shape[-1] // n_head
        for head in range(n_head):
            c = zl[0, -1, head * hd:(head + 1) * hd] @ wo[:, head * hd:(head + 1) * hd].t()
            assert res.heads[layer, head] == pytest.approx(direct(c), abs=1e-4)


@pytest.mark.parametrize("site", ["resid", "attn", "mlp", "head"])
def test_patching_matches_hf_hook_sweep(pair, site):
    arch, lm, hf = pair
    if arch == "falcon" and site != "resid":
        pytest.skip("one falcon site is enough: the batching code is family independent")
    metric = Metric("logit_diff", Target(42, "a"), Target(7, "b"))
    res = activation_patching(lm, CLEAN, CORRUPT, metric, site=site, batch_size=3)
    n_head = lm.layers[0].attn.n_head
    want = ref.patch_sweep(hf, CLEAN, CORRUPT, metric, site=site, n_heads=n_head).numpy()
    np.testing.assert_allclose(res.values, want, atol=2e-4)
    assert res.shared_prefix == 3
    if site != "head":
        assert res.forwards == lm.n_layers * (len(CLEAN) - 3)  # the shared tokens are not run
        assert np.all(res.recovered[:, :3] == 0)
    with torch.no_grad():
        clean = metric(hf(torch.tensor([CLEAN])).logits[:, -1])[0]
    assert res.clean == pytest.approx(float(clean), abs=1e-4)
