"""Parity of the engine's modules with HF transformers (test-only oracle), with and without KV cache."""

from __future__ import annotations

import pytest
import torch
from test_models_helpers import hf_model, store_for

from lminspect.models import load_model

FIXTURES = ["tiny_llama_dir", "tiny_llama_tied_dir", "tiny_gpt2_dir", "tiny_falcon_dir"]


@pytest.fixture(params=FIXTURES)
def pair(request):
    d = request.getfixturevalue(request.param)
    return load_model(store_for(d)), hf_model(d)


@torch.inference_mode()
def test_logits_match_hf(pair):
    ours, hf = pair
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 300, (3, 40), generator=g)
    ref = hf(ids).logits
    got = ours(ids)
    assert got.shape == ref.shape
    assert ref.std() > 1e-3  # a real signal, not all zeros
    assert (got - ref).abs().max().item() < 1e-4


@torch.inference_mode()
def test_kv_cache_decode_matches_hf(pair):
    ours, hf = pair
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 300, (2, 30), generator=g)
    ref = hf(ids).logits
    cache = ours.new_cache(batch_size=2, max_len=8)  # small on purpose: the cache must grow
    parts = [ours(ids[:, :12], cache=cache)]
    parts.append(ours(ids[:, 12:15], cache=cache))  # a chunk after a cached prefix
    for t in range(15, 30):
        parts.append(ours(ids[:, t:t + 1], cache=cache))
    got = torch.cat(parts, dim=1)
    assert cache.pos == 30
    assert (got - ref).abs().max().item() < 1e-4


def test_state_dict_uses_canonical_names(pair):
    ours, _ = pair
    keys = set(ours.state_dict())
    assert "embed.tokens.weight" in keys and "layers.0.attn.q.weight" in keys
    assert all(k.endswith((".weight", ".bias")) for k in keys)
    if ours.config.tie_embeddings:
        assert "head.weight" not in keys


@pytest.mark.parametrize("variant", [
    dict(alibi=False, multi_query=True, parallel_attn=True, bias=False),  # falcon-7b wiring
    dict(alibi=True, multi_query=False, parallel_attn=True, bias=True),
])
@torch.inference_mode()
def test_falcon_variants_match_hf(tmp_path, variant):
    from test_models_helpers import HFDirStore
    from transformers import FalconConfig, FalconForCausalLM

    torch.manual_seed(0)
    cfg = FalconConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       new_decoder_architecture=False, bos_token_id=0, eos_token_id=0, **variant)
    FalconForCausalLM(cfg).eval().save_pretrained(tmp_path)
    hf = hf_model(tmp_path)
    ours = load_model(HFDirStore(tmp_path))
    ids = torch.randint(0, 300, (2, 20))
    ref = hf(ids).logits
    assert (ours(ids) - ref).abs().max().item() < 1e-4
    cache = ours.new_cache(batch_size=2)
    got = torch.cat([ours(ids[:, :7], cache=cache)] + [ours(ids[:, t:t + 1], cache=cache) for t in range(7, 20)], 1)
    assert (got - ref).abs().max().item() < 1e-4
