"""The lens instruments against TransformerLens (a test-only peer; skipped when it is not installed):
activation patching (residual and per-head), head ablation and the logit lens on the tiny Llama."""

from __future__ import annotations

import numpy as np
import pytest
import torch

tl_bridge = pytest.importorskip("transformer_lens.model_bridge")
tl_patching = pytest.importorskip("transformer_lens.patching")

from lminspect.lens import Metric, Target, activation_patching, logit_lens  # noqa: E402
from lminspect.models import LayerCall, load_model  # noqa: E402

CLEAN = [5, 17, 42, 99, 7, 123, 64, 200, 11, 31]
CORRUPT = [5, 17, 42, 98, 7, 124, 64, 200, 11, 31]
METRIC = Metric("logit_diff", Target(42, "a"), Target(7, "b"))


@pytest.fixture(scope="module")
def pair(tiny_llama_dir):
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    hf = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    tok = PreTrainedTokenizerFast(tokenizer_file=str(tiny_llama_dir / "tokenizer.json"))
    bridge = tl_bridge.TransformerBridge.boot_transformers(str(tiny_llama_dir), hf_model=hf, tokenizer=tok)
    return load_model(str(tiny_llama_dir)), bridge


def _tl_metric(logits: torch.Tensor) -> torch.Tensor:
    return logits[0, -1, 42] - logits[0, -1, 7]


def test_patching_agrees_with_transformer_lens(pair):
    lm, bridge = pair
    with torch.no_grad():
        _, cache = bridge.run_with_cache(torch.tensor([CLEAN]))
        corrupt = torch.tensor([CORRUPT])
        resid = tl_patching.get_act_patch_resid_pre(bridge, corrupt, cache, _tl_metric)
        heads = tl_patching.get_act_patch_attn_head_out_all_pos(bridge, corrupt, cache, _tl_metric)
    ours = activation_patching(lm, CLEAN, CORRUPT, METRIC, site="resid")
    np.testing.assert_allclose(ours.values, resid.double().numpy(), atol=1e-4)
    ours = activation_patching(lm, CLEAN, CORRUPT, METRIC, site="head")
    np.testing.assert_allclose(ours.values, heads.double().numpy(), atol=1e-4)


def test_head_ablation_agrees_with_transformer_lens(pair):
    lm, bridge = pair

    def zero_head(z, hook):
        z[:, :, 2] = 0.0
        return z

    with torch.no_grad():
        want = bridge.run_with_hooks(torch.tensor([CLEAN]), fwd_hooks=[("blocks.1.attn.hook_z", zero_head)])
        got = lm(torch.tensor([CLEAN]), plan=[LayerCall(0), LayerCall(1, heads=((2, 0.0),)), LayerCall(2),
                                               LayerCall(3)])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_logit_lens_agrees_with_transformer_lens(pair):
    lm, bridge = pair
    with torch.no_grad():
        _, cache = bridge.run_with_cache(torch.tensor([CLEAN]))
        resid = torch.stack([cache["blocks.0.hook_resid_pre"][0, -1]]
                            + [cache[f"blocks.{i}.hook_resid_post"][0, -1] for i in range(lm.n_layers)])
        probs = torch.softmax(bridge.unembed(bridge.ln_final(resid)), -1)
    res = logit_lens(lm, CLEAN, target=Target(42, "t"))
    np.testing.assert_allclose(res.target_prob, probs[:, 42].numpy(), rtol=1e-4, atol=1e-6)
