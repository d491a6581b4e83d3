"""Function-preserving growth: every kind of growth keeps the logits (float32, real text)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from lminspect.errors import UserError  # noqa: E402
from lminspect.grow import GrowSpec, grow_model, parse_layers  # noqa: E402

TOL = 1e-5


@pytest.fixture(scope="module")
def corpus_ids():
    """The shipped training corpus, tokenized with the shipped tokenizer (vocab 4096)."""
    from lminspect.train.data import _builtin_docs, load_train_tokenizer

    tok = load_train_tokenizer("default")
    ids: list[int] = []
    for doc in _builtin_docs()[:40]:
        ids.extend(tok.encode(doc))
        if len(ids) > 3 * 64:
            break
    return torch.tensor(ids[: 3 * 64]).view(3, 64)


def _perturbed(model):
    """Non-trivial norms / biases / residual writers, so exactness is not an accident of the init."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in n:
                p.add_(noise * 0.3)
            elif n.endswith("bias"):
                p.add_(noise * 0.1)
            else:
                p.add_(noise * 0.05)
    return model.eval()


def _models():
    from lminspect.experiments.builtin import make_gpt2ish, make_llamaish

    torch.manual_seed(0)
    yield "llama_tied", _perturbed(make_llamaish(4096, 64, n_layer=2, dim=32, n_head=4, n_kv_head=2))
    yield "llama_untied", _perturbed(make_llamaish(4096, 64, n_layer=2, dim=32, n_head=4, n_kv_head=2,
                                                   tie_embeddings=False))
    yield "gpt2", _perturbed(make_gpt2ish(4096, 64, n_layer=2, dim=32, n_head=4))


SPECS = {
    "depth_mid": {"layers": 2, "at": 1},
    "depth_front": {"layers": 1, "at": 0},
    "width": {"width": 64},
    "ffn": {"ffn": 200},
    "vocab": {"vocab": 4200},
    "vocab_zero": {"vocab": 4100, "vocab_init": "zero"},
    "all": {"layers": 1, "width": 64, "ffn": 256, "vocab": 4160},
}


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_growth_preserves_logits(corpus_ids, spec_name):
    for name, model in _models():
        with torch.inference_mode():
            ref = model(corpus_ids)
        grown, pmap = grow_model(model, SPECS[spec_name])
        with torch.inference_mode():
            out = grown(corpus_ids)
        V = model.vocab_size
        diff = (out[..., :V] - ref).abs().max().item()
        assert diff < TOL, (name, spec_name, diff)
        if grown.vocab_size > V:  # new tokens never win
            assert (out[..., V:].max(-1).values <= out[..., :V].max(-1).values).all()
        assert set(pmap.sources) == set(grown.state_dict())


def test_heads_growth_with_gqa(corpus_ids):
    from lminspect.experiments.builtin import make_llamaish

    torch.manual_seed(0)
    model = _perturbed(make_llamaish(4096, 64, n_layer=2, dim=32, n_head=4, n_kv_head=2))
    with torch.inference_mode():
        ref = model(corpus_ids)
    for spec in ({"heads": 8}, {"heads": 8, "kv_heads": 2}, {"heads": 6, "kv_heads": 3},
                 {"width": 64, "heads": 12, "kv_heads": 4}):
        grown, _ = grow_model(model, spec)
        with torch.inference_mode():
            diff = (grown(corpus_ids) - ref).abs().max().item()
        assert diff < TOL, (spec, diff)
        assert grown.config.head_dim == model.config.head_dim


def test_gpt2_heads_follow_width():
    from lminspect.experiments.builtin import make_gpt2ish

    model = make_gpt2ish(300, 32, n_layer=1, dim=32, n_head=4)
    grown, _ = grow_model(model, {"width": 48})
    assert grown.config.n_head == 6 and grown.config.head_dim == 8
    with pytest.raises(UserError, match="heads"):
        grow_model(model, {"width": 48, "heads": 4})


@pytest.mark.parametrize("spec,match", [
    ({"width": 16}, "shrink width"), ({"ffn": 8}, "shrink ffn"), ({"vocab": 10}, "shrink vocab"),
    ({"layers": -1}, "remove layers"), ({"at": 9, "layers": 1}, "--at"), ({"heads": 3}, "heads"),
    ({"heads": 6, "kv_heads": 4}, "grouped"), ({"vocab_init": "x", "vocab": 400}, "vocab_init"),
])
def test_bad_growth(spec, match):
    from lminspect.experiments.builtin import make_llamaish

    model = make_llamaish(300, 32, n_layer=1, dim=32, n_head=4, n_kv_head=2)
    with pytest.raises(UserError, match=match):
        grow_model(model, spec)


def test_parse_layers():
    assert parse_layers("+2", 4) == 2 and parse_layers("6", 4) == 2 and parse_layers(None, 4) == 0
    with pytest.raises(UserError):
        parse_layers("3", 4)
    with pytest.raises(UserError):
        parse_layers("two", 4)


def test_param_map_carries_state():
    from lminspect.experiments.builtin import make_llamaish

    model = make_llamaish(300, 32, n_layer=1, dim=32, n_head=4, n_kv_head=2)
    grown, pmap = grow_model(model, {"width": 64, "layers": 1, "at": 0})
    old = model.state_dict()["layers.0.attn.q.weight"]
    new = grown.state_dict()["layers.1.attn.q.weight"]  # old block 0 moved to 1
    carried = pmap.carry("layers.1.attn.q.weight", new, old)
    assert torch.equal(carried[: old.shape[0], :32], old) and carried[:, 32:].abs().sum() == 0
    assert pmap.sources["layers.0.attn.q.weight"][0] is None
    assert GrowSpec.from_dict({"width": 64, "tokens": 10}).width == 64


def test_grown_dir_loads(tmp_path, tiny_llama_dir, tiny_gpt2_dir):
    import lminspect as li
    from lminspect.grow.io import grow_dir
    from lminspect.models import load_model
    from lminspect.weights import open_store

    for src in (tiny_llama_dir, tiny_gpt2_dir):
        out = tmp_path / f"grown_{src.name}"
        old, new, path = grow_dir(src, out, GrowSpec(layers=1, width=128, vocab=320))
        li.open(str(path))  # the REPL opens it
        store = open_store(str(path))
        assert store.arch == old.arch and store.tokenizer_json()
        loaded = load_model(store)
        ids = torch.randint(0, 300, (1, 20), generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            assert (loaded(ids)[..., :300] - old(ids)).abs().max().item() < TOL
        cfg = json.loads((path / "config.json").read_text())
        assert cfg["lminspect_growth"]["width"] == 128 and cfg["vocab_size"] == 320
