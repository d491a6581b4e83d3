"""StitchedModel forwards and exported directories: lminspect == transformers on the stitched model."""

from __future__ import annotations

import json

import pytest

PLAN = "0,1r2,3*0.5,2*attn=0.7*mlp=1.3"


def _assert_same_logits(hf, out, ids, ours) -> None:
    """transformers on the exported dir, and lminspect loading it back, give our stitched logits."""
    import torch

    from lminspect.models import load_model

    with torch.no_grad():
        theirs = hf(ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    again = load_model(str(out))
    with torch.no_grad():
        torch.testing.assert_close(again.forward(ids), ours, atol=1e-5, rtol=1e-5)


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
    _assert_same_logits(hf, out, ids, ours)


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


# --------------------------------------------------------------------------- falcon

# name -> FalconConfig options, beside the RW layout of the tiny_falcon_dir fixture:
# Falcon-7B style (multi-query, parallel attention, rotary, no biases), multi-query with ALiBi and an
# untied head, and the classic per-head qkv layout with rotary and sequential attention/MLP.
FALCON_VARIANTS = {
    "mq_parallel_rotary": dict(alibi=False, multi_query=True, parallel_attn=True, bias=False, rope_theta=5000.0),
    "mq_parallel_alibi_untied": dict(
        alibi=True, multi_query=True, parallel_attn=True, bias=True, tie_word_embeddings=False
    ),
    "classic_sequential_rotary": dict(alibi=False, multi_query=False, parallel_attn=False, bias=True),
}


@pytest.fixture(scope="module", params=["rw", *FALCON_VARIANTS])
def falcon_src(request, tiny_falcon_dir, tmp_path_factory):
    """(directory, n_layers): the conftest RW fixture, or a 4-layer variant with noisy norms/biases."""
    if request.param == "rw":
        return tiny_falcon_dir, 3
    import shutil

    import torch
    from transformers import FalconConfig, FalconForCausalLM

    torch.manual_seed(1)
    cfg = FalconConfig(
        vocab_size=300, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
        new_decoder_architecture=False, initializer_range=0.1, bos_token_id=0, eos_token_id=0,
        **FALCON_VARIANTS[request.param],
    )
    m = FalconForCausalLM(cfg).eval()
    with torch.no_grad():  # unit norms and zero biases would hide a misplaced tensor
        for name, p in m.named_parameters():
            if name.endswith("bias") or "ln" in name or "layernorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    out = tmp_path_factory.mktemp(f"falcon_{request.param}")
    m.save_pretrained(out, safe_serialization=True)
    shutil.copy(tiny_falcon_dir / "tokenizer.json", out / "tokenizer.json")
    return out, 4


def test_falcon_export_matches_stitched_forward_in_transformers(falcon_src, tmp_path):
    import torch
    from transformers import FalconForCausalLM

    from lminspect.models import load_model
    from lminspect.stitch import StitchedModel, describe_plan, export_stitched, parse_plan

    src, n = falcon_src
    model = load_model(str(src))
    assert model.arch == "falcon" and len(model.layers) == n
    # skips a layer, repeats one, scales both branches of one occurrence and each branch of another
    spec = "0r2,2*0.5,0*attn=0.7*mlp=1.3" if n == 3 else "0,1r2,3*0.5,1*attn=0.7*mlp=1.3"
    plan = parse_plan(spec, n)
    s = describe_plan(plan, n)
    assert s.skipped and s.repeated and s.scaled == 2
    sm = StitchedModel(model, plan)
    ids = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 1, 64]])
    with torch.no_grad():
        ours = sm.forward(ids)
        full = model.forward(ids)
    assert (ours - full).abs().max() > 1e-3  # the plan changes the logits, so equality below means something
    out = tmp_path / "stitched"
    tj = (src / "tokenizer.json").read_text()
    export_stitched(sm, None, out, tokenizer_json=tj)
    cfg = json.loads((out / "config.json").read_text())
    src_cfg = json.loads((src / "config.json").read_text())
    assert cfg["model_type"] == "falcon" and cfg["num_hidden_layers"] == len(plan)
    assert parse_plan(cfg["lminspect_plan"], n) == plan and cfg["lminspect_source_layers"] == n
    for key in ("multi_query", "parallel_attn", "alibi", "bias", "tie_word_embeddings"):
        assert cfg[key] == src_cfg[key], key
    assert cfg["new_decoder_architecture"] is False
    assert (out / "tokenizer.json").read_text() == tj
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dir left behind
    hf = FalconForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert hf.config.num_hidden_layers == len(plan)
    _assert_same_logits(hf, out, ids, ours)


@pytest.mark.parametrize("multi_query", [False, True])
def test_falcon_qkv_fuse_inverts_the_weight_store_split(multi_query):
    import numpy as np
    import torch

    from lminspect.weights.export import _falcon_fuse_qkv
    from lminspect.weights.naming import _falcon_qkv

    nh, hd, dim = 4, 8, 16
    rows = (nh + 2) * hd if multi_query else 3 * nh * hd
    cfg = {"num_attention_heads": nh, "multi_query": multi_query, "new_decoder_architecture": False}
    for shape in ((rows, dim), (rows,)):
        fused = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
        parts = {p: torch.from_numpy(np.ascontiguousarray(fn(fused))) for p, fn, _ in _falcon_qkv(shape, cfg)}
        again = _falcon_fuse_qkv(parts["q"], parts["k"], parts["v"], nh, multi_query)
        assert torch.equal(again, torch.from_numpy(fused))


def test_falcon_export_refuses_what_hf_falcon_cannot_hold(tiny_falcon_dir, tmp_path, monkeypatch):
    """Nothing is written when export refuses: an unknown family, or a Falcon layout it does not write."""
    from lminspect.errors import UserError
    from lminspect.models import load_model
    from lminspect.stitch import export_stitched

    model = load_model(str(tiny_falcon_dir))
    out = tmp_path / "x"
    hf = model.config.to_hf()
    monkeypatch.setattr(model.config, "to_hf", lambda: {**hf, "new_decoder_architecture": True})
    with pytest.raises(UserError, match="falcon.*new_decoder_architecture"):
        export_stitched(model, "0,2", out)
    monkeypatch.undo()
    monkeypatch.setattr(model, "arch", "bloom", raising=False)
    with pytest.raises(UserError, match="not bloom"):
        export_stitched(model, "0,2", out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- name tables, refusals


def test_value_norm_model_export_is_a_clear_refusal(tmp_path):
    """HF Llama has no value-norm module: one UserError naming the tensor, nothing written."""
    from lminspect.errors import UserError
    from lminspect.models import Llama, LlamaConfig, add_value_norm
    from lminspect.stitch import export_stitched

    model = add_value_norm(Llama(LlamaConfig(vocab_size=50, dim=16, n_layer=2, n_head=2, n_kv_head=2, head_dim=8,
                                             ffn_dim=32, context_length=32)))
    out = tmp_path / "vn"
    with pytest.raises(UserError, match=r"layers\.0\.attn\.v_norm\.weight as llama: HF's LlamaForCausalLM"):
        export_stitched(model, "0,1", out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("arch", ["llama", "gpt2", "falcon"])
def test_name_table_reads_back_what_it_writes(arch):
    """One table per architecture: every canonical module written as an HF name reads back to itself."""
    from lminspect.weights.naming import HF_TABLES

    table = HF_TABLES[arch]
    cmods = [*table.top.values(), *(f"layers.7.{c}" for c in table.layer.values())]
    for cmod in cmods:
        for kind in ("weight", "bias"):
            hf = table.to_hf(f"{cmod}.{kind}")
            assert table.to_canonical(hf) == (cmod, kind)
    with pytest.raises(KeyError):
        table.to_hf("layers.0.attn.v_norm.weight")
    if table.fused_qkv:
        assert table.to_canonical(f"{table.block.format(N=3)}{table.fused_qkv}.bias") == ("layers.3.attn.qkv", "bias")
