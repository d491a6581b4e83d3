"""The lens instruments on the real SmolLM2-135M against HF transformers with plain hooks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import hf_patch_reference as ref  # noqa: E402

pytestmark = [pytest.mark.smollm2, pytest.mark.xdist_group("smollm2")]


def test_smollm2_lens_dla_and_patching_match_hf(smollm2_dir):
    from transformers import AutoModelForCausalLM

    import lminspect as li
    from lminspect.lens import parse_metric

    m = li.open(str(smollm2_dir))
    hf = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    prompt, corrupt = "The capital of France is", "The capital of Italy is"

    lens = m.lens(prompt, target=" Paris", k=3)
    assert lens.target_rank[-1] == 1 and lens.top_tokens[-1][0] == " Paris"
    assert lens.target_rank[1] > 10  # the first layers do not know it yet
    with torch.no_grad():
        want = torch.softmax(hf(torch.tensor([m.encode(prompt)])).logits[0, -1], -1)
    np.testing.assert_allclose(lens.top_probs[-1], want.topk(3).values.numpy(), atol=1e-4)

    dla = m.dla(prompt, target=" Paris", baseline=" Rome")
    assert dla.total == pytest.approx(dla.logit, abs=1e-3)

    res = m.patch(prompt, corrupt, "logit_diff: Paris,Rome", site="resid")
    layers = [0, 12, 24, 29]  # the HF sweep runs one forward per cell: a few layers are enough
    metric = parse_metric("logit_diff: Paris,Rome", m.tokenizer, m.engine.vocab_size)
    theirs = ref.patch_sweep(hf, m.encode(prompt), m.encode(corrupt), metric, site="resid", layers=layers)
    np.testing.assert_allclose(res.values[layers], theirs.numpy(), atol=2e-3)
    # the country's information has moved to the last token by the last layers
    assert res.recovered[-1, -1] == pytest.approx(1.0, abs=0.02) and abs(res.recovered[0, -1]) < 0.1
