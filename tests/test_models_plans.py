"""Plans (repeats, skips, scales), per-occurrence KV slots, hooks, configs and errors."""

from __future__ import annotations

import pytest
import torch
from test_models_helpers import store_for

from lminspect.errors import UserError
from lminspect.models import (
    GPT2,
    Falcon,
    FalconConfig,
    GPT2Config,
    LayerCall,
    Llama,
    LlamaConfig,
    build_model,
    config_from_hf,
    load_model,
)


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    return load_model(store_for(tiny_llama_dir))


PLAN = [LayerCall(0), LayerCall(1), LayerCall(1, attn_scale=0.5), LayerCall(2), LayerCall(2),
        LayerCall(2, mlp_scale=1.5), LayerCall(3)]


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt2_dir", "tiny_falcon_dir"])
@torch.inference_mode()
def test_repeated_plan_with_cache_equals_full_recompute(fixture, request):
    model = load_model(store_for(request.getfixturevalue(fixture)))
    plan = [c for c in PLAN if c.index < model.n_layers]
    ids = torch.randint(0, 300, (1, 24), generator=torch.Generator().manual_seed(3))
    full = model(ids, plan=plan)
    cache = model.new_cache(plan)
    assert len(cache.k) == len(plan)  # one slot per occurrence, not per layer
    steps = [model(ids[:, :10], cache=cache)] + [model(ids[:, t:t + 1], cache=cache) for t in range(10, 24)]
    got = torch.cat(steps, dim=1)
    assert (got - full).abs().max().item() < 1e-4
    # and the plan really changes the function
    assert (model(ids) - full).abs().max().item() > 1e-3


@torch.inference_mode()
def test_plan_leaves_model_unchanged(llama):
    before = {k: v.clone() for k, v in llama.state_dict().items()}
    ids = torch.randint(0, 300, (1, 12))
    ref = llama(ids)
    llama(ids, plan=PLAN)
    llama(ids, plan=[LayerCall(3), LayerCall(0)])
    after = llama.state_dict()
    assert before.keys() == after.keys() and llama.n_layers == 4
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(llama(ids), ref)


def test_plan_out_of_range_is_user_error(llama):
    with pytest.raises(UserError, match="layer 9"):
        llama(torch.zeros(1, 3, dtype=torch.long), plan=[LayerCall(9)])


def test_context_overflow_is_user_error(llama):
    with pytest.raises(UserError, match="context"):
        llama(torch.zeros(1, llama.context_length + 1, dtype=torch.long))
    cache = llama.new_cache()
    llama(torch.zeros(1, llama.context_length - 1, dtype=torch.long), cache=cache)
    with pytest.raises(UserError, match="context"):
        llama(torch.zeros(1, 2, dtype=torch.long), cache=cache)


@torch.inference_mode()
def test_run_with_cache_sites(llama):
    ids = torch.randint(0, 300, (2, 9))
    logits, acts = llama.run_with_cache(ids, sites=["resid_out", "attn_probs.1", "mlp_hidden.0"])
    assert set(acts) == {f"resid_out.{i}" for i in range(4)} | {"attn_probs.1", "mlp_hidden.0"}
    assert acts["mlp_hidden.0"].shape == (2, 9, llama.config.ffn_dim)
    probs = acts["attn_probs.1"]
    assert probs.shape == (2, llama.config.n_head, 9, 9)
    assert torch.allclose(probs.sum(-1), torch.ones(2, llama.config.n_head, 9), atol=1e-5)
    assert probs.triu(1).abs().max() == 0  # causal
    assert (logits - llama(ids)).abs().max() < 1e-4  # eager path == SDPA path
    assert (llama._logits(llama.norm(acts["resid_out.3"])) - logits).abs().max() < 1e-5
    # positions are plan positions
    _, acts = llama.run_with_cache(ids, sites=["resid_in"], plan=PLAN)
    assert set(acts) == {f"resid_in.{i}" for i in range(len(PLAN))}
    with pytest.raises(UserError, match="hook site"):
        llama.run_with_cache(ids, sites=["nonsense.1"])


@torch.inference_mode()
def test_hooks_callback_and_patching(llama):
    ids = torch.randint(0, 300, (1, 8))
    seen: list[tuple[str, tuple]] = []
    with llama.hooks(lambda name, t: seen.append((name, tuple(t.shape)))):
        ref = llama(ids)
    kinds = {n.split(".")[0] for n, _ in seen}
    assert kinds == {"resid_in", "resid_out", "attn_out", "mlp_out", "mlp_hidden"}
    assert len(seen) == 5 * 4
    with llama.hooks(lambda name, t: torch.zeros_like(t), sites=["mlp_out.2"]):
        ablated = llama(ids)
    assert (ablated - ref).abs().max() > 1e-4
    assert llama._hooks is None
    assert torch.equal(llama(ids), ref)


def test_random_init_models_train_ready():
    torch.manual_seed(0)
    for model in (
        Llama(LlamaConfig(vocab_size=97, dim=32, n_layer=2, n_head=4, n_kv_head=2, head_dim=8, ffn_dim=64,
                          context_length=64)),
        GPT2(GPT2Config(vocab_size=97, dim=32, n_layer=2, n_head=4, ffn_dim=128, context_length=64)),
        Falcon(FalconConfig(vocab_size=97, dim=32, n_layer=2, n_head=4, ffn_dim=128, context_length=64)),
    ):
        ids = torch.randint(0, 97, (2, 16))
        logits = model(ids)
        targets = torch.randint(0, 97, (2, 16))
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        assert abs(loss.item() - torch.log(torch.tensor(97.0)).item()) < 0.5
        loss.backward()
        assert model.layers[0].attn.q.weight.grad is not None
        std = model.layers[1].attn.o.weight.std().item()
        assert std < 0.02 / 1.5  # residual projections scaled down
        # to_hf round trip
        cfg2 = config_from_hf(model.config.to_hf())
        assert cfg2 == model.config
        assert type(build_model(cfg2)) is type(model)


def test_value_norm_hook_point():
    model = Llama(LlamaConfig(vocab_size=50, dim=16, n_layer=1, n_head=2, n_kv_head=2, head_dim=8, ffn_dim=32,
                              context_length=32))
    ids = torch.randint(0, 50, (1, 5))
    ref = model(ids)
    model.layers[0].attn.v_norm = torch.nn.LayerNorm(16)
    assert "layers.0.attn.v_norm.weight" in model.state_dict()
    assert (model(ids) - ref).abs().max() > 0


@pytest.mark.parametrize("cfg, match", [
    ({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
      "intermediate_size": 16, "rope_scaling": {"rope_type": "longrope", "factor": 4.0}}, "rope_scaling"),
    ({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
      "intermediate_size": 16, "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5}}, "rope_parameters"),
    ({"model_type": "llama", "vocab_size": 10, "num_hidden_layers": 1}, "hidden_size"),
    ({"model_type": "falcon", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
      "num_attention_heads": 2, "new_decoder_architecture": True}, "new_decoder_architecture"),
    ({"model_type": "mamba"}, "model_type .mamba. is not supported"),
    ({"model_type": "gpt2", "vocab_size": 10, "n_embd": 8, "n_layer": 1, "n_head": 2,
      "activation_function": "weird"}, "activation"),
])
def test_bad_config_is_user_error(cfg, match):
    with pytest.raises(UserError, match=match):
        build_model(config_from_hf(cfg))


def test_rope_parameters_spelling():
    base = {"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 16}
    assert config_from_hf({**base, "rope_theta": 5e5}).rope_theta == 5e5
    assert config_from_hf({**base, "rope_parameters": {"rope_type": "default", "rope_theta": 7e5}}).rope_theta == 7e5


def test_missing_and_misshapen_tensors_are_user_errors(tiny_llama_dir):
    from test_models_helpers import HFDirStore

    store = HFDirStore(tiny_llama_dir)
    del store.tensors["layers.2.mlp.up.weight"]
    with pytest.raises(UserError, match=r"layers\.2\.mlp\.up\.weight.*\(128, 64\)"):
        load_model(store)
    store = HFDirStore(tiny_llama_dir)
    store.tensors["norm.weight"] = store.tensors["norm.weight"][:10]
    with pytest.raises(UserError, match=r"norm\.weight.*expected \(64,\)"):
        load_model(store)


def test_bfloat16_load(tiny_llama_dir):
    model = load_model(store_for(tiny_llama_dir), dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    ref = load_model(store_for(tiny_llama_dir))
    ids = torch.randint(0, 300, (1, 10))
    with torch.inference_mode():
        assert (model(ids).float() - ref(ids)).abs().max() < 0.1
    with pytest.raises(UserError, match="dtype"):
        load_model(store_for(tiny_llama_dir), dtype="int3")


@torch.inference_mode()
def test_cache_expand_shares_a_prefix(llama):
    ids = torch.randint(0, 300, (3, 14), generator=torch.Generator().manual_seed(9))
    ids[:, :8] = ids[0, :8]  # common prefix
    full = llama(ids, plan=PLAN)
    c1 = llama.new_cache(PLAN)
    llama(ids[:1, :8], cache=c1)
    cb = c1.expand(3, max_len=14)
    got = llama(ids[:, 8:], cache=cb)
    assert cb.pos == 14 and cb.batch_size == 3
    assert (got - full[:, 8:]).abs().max() < 1e-4
