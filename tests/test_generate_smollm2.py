"""The real SmolLM2-135M: greedy continuation equals HF transformers' on the same GGUF, token for token."""

from __future__ import annotations

import pytest
import torch

from lminspect.generate import generate, greedy_ids
from lminspect.models import load_model
from lminspect.tokenizer import load_tokenizer
from lminspect.weights import open_store


@pytest.mark.smollm2
@pytest.mark.xdist_group("smollm2")
def test_smollm2_greedy_matches_hf_gguf(smollm2_gguf):
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    store = open_store(smollm2_gguf)
    model = load_model(store)
    tok = load_tokenizer(store)
    ids = tok.encode("Once upon a time")
    assert tok.decode(ids) == "Once upon a time"
    ours = greedy_ids(model, ids, 64)

    hf = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name,
                                              dtype=torch.float32).eval()
    with torch.inference_mode():
        x = torch.tensor([ids])
        assert (hf(x).logits - model(x)).abs().max().item() < 1e-3
        out = hf.generate(x, max_new_tokens=64, do_sample=False, pad_token_id=tok.eos_id)[0, len(ids):].tolist()
    assert len(out) >= 8
    assert ours[:len(out)] == out

    g = generate(model, tok, "Once upon a time", max_new_tokens=64)
    text = "".join(g)
    cut = next((i for i, t in enumerate(ours) if t in tok.eos_ids), len(ours))
    assert text == tok.decode(ours[:cut])
    assert g.stats.new_tokens == min(64, cut + 1)
