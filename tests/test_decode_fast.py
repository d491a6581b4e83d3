"""The decode fast path (models/decode.py): the same logits, cache and tokens as the module tree,
and the module tree whenever something could observe or change the internals."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from test_models_stored import write_quant_gguf

from lminspect.generate import generate, greedy_ids
from lminspect.models import decode, load_model
from lminspect.models.decode import fast_decoder
from lminspect.models.layercall import LayerCall
from lminspect.models.llama import Llama, LlamaConfig
from lminspect.tokenizer import load_tokenizer
from lminspect.weights import open_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import shaped_files as sf  # noqa: E402

pytest.importorskip("numba")
pytest.importorskip("gguf")
SMALL = sf.shape(vocab=300, dim=256, layers=2, heads=4, kv_heads=2, ffn=512, context=128)


@pytest.fixture(autouse=True)
def exact_decode(monkeypatch):
    """Float32 activations in both paths, so they agree up to the order of additions. With the
    default int8 activations a last-bit difference in x can move one value to the next int8 step
    (a ~1/127 jump), which no tight tolerance survives: ``test_int8_fast_path_near_the_tree``
    checks that mode against its own bound."""
    from lminspect.models import packed

    monkeypatch.setattr(packed, "EXACT_DECODE", True)


@pytest.fixture(scope="module")
def quant_gguf(tiny_llama_dir, tmp_path_factory):  # Q4_1/Q4_0/Q8_0 tiles, GGUF q/k row order
    return write_quant_gguf(tiny_llama_dir, tmp_path_factory.mktemp("fq") / "tiny-q.gguf")


@pytest.fixture(scope="module")
def quant_gguf_tied(tiny_llama_tied_dir, tmp_path_factory):  # a packed tied head
    return write_quant_gguf(tiny_llama_tied_dir, tmp_path_factory.mktemp("fqt") / "tiny-qt.gguf")


@pytest.fixture(scope="module")
def kquant_gguf(tmp_path_factory):  # Q4_K / Q6_K in the file's layout, a K-quant embedding
    return sf.write_kquant_gguf(tmp_path_factory.mktemp("fk") / "tiny-q4km.gguf", SMALL, fill="random")


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory):
    return sf.write_bf16_dir(tmp_path_factory.mktemp("fb") / "bf16", SMALL, fill="random")


def _tiny(**over) -> Llama:
    torch.manual_seed(0)
    cfg = dict(vocab_size=97, dim=64, n_layer=3, n_head=4, n_kv_head=2, head_dim=16, ffn_dim=96, context_length=64)
    return Llama(LlamaConfig(**{**cfg, **over})).eval()


def _both(model, ids, steps, plan=None, cap=None):
    """Each step's logits from the module tree and from the fast path (two caches, one prefill),
    and the two caches after the last step."""
    cap = cap or len(ids) + len(steps)
    with torch.inference_mode():
        tree, fast = model.new_cache(plan, max_len=cap), model.new_cache(plan, max_len=cap)
        x = torch.tensor([ids])
        model(x, cache=tree, last_only=True)
        model(x, cache=fast, last_only=True)
        fd = fast_decoder(model, fast)
        assert fd is not None
        pairs = [(model(torch.tensor([[t]]), cache=tree)[0, -1], fd.step(t).clone()) for t in steps]
    return pairs, tree, fast


def _close(pairs, tree, fast):
    for a, b in pairs:
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max())), float((a - b).abs().max())
        assert int(a.argmax()) == int(b.argmax())
    assert tree.pos == fast.pos
    for s in range(len(tree.k)):
        for ta, fa in ((tree.k[s], fast.k[s]), (tree.v[s], fast.v[s])):
            assert torch.allclose(ta[:, :, :tree.pos], fa[:, :, :fast.pos], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("which", ["quant_gguf", "quant_gguf_tied", "kquant_gguf", "bf16_dir", "tiny_llama_dir"])
def test_fast_steps_equal_the_module_tree(which, request):
    path = request.getfixturevalue(which)
    model = load_model(path, weights="stored")
    _close(*_both(model, [1, 5, 9, 2], [7, 3, 11, 40, 8, 0]))


@pytest.mark.parametrize("which", ["quant_gguf", "kquant_gguf"])
def test_int8_fast_path_near_the_tree(which, request, monkeypatch):
    """The default int8-activation kernels in both paths: each step's logits within 5% of the
    largest logit of the tree's (int8 rounding of x, amplified through two layers)."""
    from lminspect.models import packed

    monkeypatch.setattr(packed, "EXACT_DECODE", False)
    model = load_model(request.getfixturevalue(which), weights="stored")
    pairs, tree, fast = _both(model, [1, 5, 9, 2], [7, 3, 11, 40])
    for a, b in pairs:
        assert float((a - b).abs().max()) <= 0.05 * float(a.abs().max())
    assert tree.pos == fast.pos


def test_float32_weights_and_a_growing_cache(quant_gguf):
    """Dense float32 weights (torch.mv into the buffers) and a cache that grows mid-way."""
    model = load_model(quant_gguf, weights="float32")
    _close(*_both(model, [1, 2], [3, 4, 5, 6, 7, 8, 9], cap=3))


@pytest.mark.parametrize("plan", [
    [LayerCall(0), LayerCall(1, attn_scale=0.5), LayerCall(1, mlp_scale=1.5), LayerCall(3)],
    [LayerCall(2), LayerCall(0, heads=((1, 0.0),)), LayerCall(2, kv_heads=((1, 2.0),), attn_scale=0.0)],
])
def test_plans_repeats_skips_and_head_scales(quant_gguf, plan):
    model = load_model(quant_gguf, weights="stored")
    _close(*_both(model, [3, 4, 5], [6, 7, 8], plan=plan))


@pytest.mark.parametrize("over", [
    {"attn_bias": True, "o_bias": False},  # Qwen 2
    {"embedding_multiplier": 12.0, "residual_multiplier": 0.22, "attention_multiplier": 0.0078125,
     "logits_scaling": 8.0},  # Granite
    {"no_rope_layers": [1, 0, 1]},  # SmolLM3: a layer without RoPE
    {"tie_embeddings": True},
])
def test_family_fields(over):
    model = _tiny(**over)
    with torch.no_grad():
        for b in model.layers:
            for lin in (b.attn.q, b.attn.k, b.attn.v):
                if lin.bias is not None:
                    lin.bias.normal_()
    _close(*_both(model, [1, 2, 3], [4, 5, 6, 7]))


def test_edited_weight_is_read(quant_gguf):
    """A weight touched before a generation (a float32 Parameter now) is what the fast path reads."""
    model = load_model(quant_gguf, weights="stored")
    with torch.no_grad():
        model.layers[1].attn.o.weight.mul_(3.0)
        model.layers[2].attn.q.weight.mul_(-1.0)  # a GGUF q: permuted rows, now dense
    assert not model.layers[1].attn.o.kernel_ready and model.layers[0].attn.o.kernel_ready
    _close(*_both(model, [1, 2, 3], [4, 5, 6]))


@pytest.mark.parametrize("which", ["quant_gguf", "tiny_llama_dir"])
def test_generate_tokens_identical(which, request, monkeypatch):
    path = request.getfixturevalue(which)
    model = load_model(path, weights="stored")
    tok = load_tokenizer(open_store(path)) if which == "tiny_llama_dir" else None
    prompt = [1, 2, 3, 4]
    runs = []
    for enabled in (True, False):
        monkeypatch.setattr(decode, "ENABLED", enabled)
        g = generate(model, tok, prompt, max_new_tokens=20, repetition_penalty=1.3)
        text = "".join(g)
        runs.append((g.ids, text, greedy_ids(model, prompt, 20)))
    assert runs[0] == runs[1]


def test_off_when_something_could_observe_it(quant_gguf):
    model = load_model(quant_gguf, weights="stored")
    with torch.inference_mode():
        cache = model.new_cache(max_len=8)
        assert fast_decoder(model, cache) is not None
        with model.hooks(lambda name, t: None, sites=["mlp_out"]):
            assert fast_decoder(model, cache) is None
        h = model.layers[1].mlp.register_forward_hook(lambda *a: None)
        assert fast_decoder(model, cache) is None
        h.remove()
        assert fast_decoder(model, model.new_cache(batch_size=2, max_len=8)) is None
    with torch.enable_grad():
        assert fast_decoder(model, cache) is None
    with torch.inference_mode():
        model.layers[0].mlp.act = torch.nn.functional.gelu
        assert fast_decoder(model, cache) is None


@pytest.mark.parametrize("over", [{"qk_norm": "head"}, {"post_norms": True}, {"sliding_window": 4}])
def test_off_for_other_blocks(over):
    model = _tiny(**over)
    with torch.inference_mode():
        assert fast_decoder(model, model.new_cache(max_len=8)) is None
        assert fast_decoder(model.bfloat16(), model.new_cache(max_len=8)) is None


def test_off_without_numba(quant_gguf, monkeypatch):
    model = load_model(quant_gguf, weights="stored")
    monkeypatch.setattr(decode, "_HELPERS", False)
    with torch.inference_mode():
        assert fast_decoder(model, model.new_cache(max_len=8)) is None


def test_greedy_pick_is_torch_argmax():
    from lminspect.generate import greedy_pick

    nan, inf = float("nan"), float("inf")
    for v in ([1.0, 3.0, 3.0], [1.0, nan, 5.0, nan], [-inf, -inf], [0.5], [2.0, inf, inf]):
        t = torch.tensor(v)
        assert greedy_pick(t) == int(t.argmax()), v
        assert greedy_pick(t.double()) == int(t.argmax())
    t = torch.randn(2, 50)[:, 7]  # a strided view
    assert greedy_pick(t) == int(t.argmax())


@pytest.mark.smollm2
@pytest.mark.xdist_group("smollm2")
def test_smollm2_fast_path_greedy_64_identical(smollm2_gguf, monkeypatch):
    """The real model: 64 greedy tokens through the fast path equal the module tree's, and each
    step's logits agree within float32 rounding."""
    model = load_model(smollm2_gguf, weights="stored")
    ids = load_tokenizer(open_store(smollm2_gguf)).encode("Once upon a time")
    fast = greedy_ids(model, ids, 64)
    _close(*_both(model, ids, fast[:12]))
    monkeypatch.setattr(decode, "ENABLED", False)
    assert greedy_ids(model, ids, 64) == fast


@pytest.mark.parametrize("exact", [False, True])
def test_bound_matvec_is_matvec(exact, monkeypatch):
    """A bound kernel gives ``matvec``'s numbers exactly; bindings on one buffer share its int8 form."""
    import numpy as np

    from lminspect.models import packed
    from lminspect.models.packed import PackedWeight

    monkeypatch.setattr(packed, "EXACT_DECODE", exact)
    rng = np.random.default_rng(0)
    ws = [PackedWeight.from_gguf_blocks(kind, sf.random_blocks(kind, 40, 512, rng), 512, tiles=tiles)
          for kind, tiles in (("Q4_1", False), ("Q4_K", False), ("Q6_K", False), ("Q8_0", True))]
    ws.append(PackedWeight.from_bf16(sf._bf16_bits(rng.standard_normal((24, 512)).astype(np.float32))))
    x = rng.standard_normal(512).astype(np.float32)
    preps: dict = {}
    shared = [w.bound_matvec(x, preps) for w in ws]
    alone = [w.bound_matvec(x) for w in ws]
    assert len(preps) == (0 if exact else 1)  # one int8 form of x, shared by the integer-dot kinds
    for v in preps.values():
        v()
    for w, (c1, y1), (c2, y2) in zip(ws, shared, alone, strict=True):
        c1()
        c2()
        want = w.matvec(torch.from_numpy(x)).numpy()
        assert np.array_equal(y1, want) and np.array_equal(y2, want), w.kind
