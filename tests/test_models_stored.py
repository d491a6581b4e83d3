"""The decode path on weights as stored: packed GGUF blocks / bf16 bits, kernels, model wiring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_weights_gguf import write_llama_gguf

from lminspect.errors import UserError
from lminspect.generate import greedy_ids
from lminspect.models import load_model, packed
from lminspect.models.layercall import LayerCall
from lminspect.models.packed import PackedWeight
from lminspect.models.stored import StoredLinear, resolve_weights
from lminspect.weights import open_store

gguf = pytest.importorskip("gguf")
QT = gguf.GGMLQuantizationType


@pytest.fixture
def exact_decode(monkeypatch):
    """Decode with float32 activations (the float kernels, tiles for Q8_0/Q4_0/Q4_1): the numbers
    of the dense model up to the order of additions. The default int8-activation path is checked
    against its error bound in tests/test_packed_int.py."""
    monkeypatch.setattr(packed, "EXACT_DECODE", True)


def _quantized(kind: str, rows: int, cols: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(GGUF block bytes [rows, row_bytes], gguf's own dequantization [rows, cols])."""
    a = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    q = gguf.quants.quantize(a, QT[kind])
    return q, gguf.quants.dequantize(q, QT[kind]).reshape(rows, cols)


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", "Q4_1"])
@pytest.mark.parametrize("rows", [64, 72])  # a whole tile, and a padded last tile
def test_packed_blocks_are_the_dequantized_matrix(kind, rows):
    q, ref = _quantized(kind, rows, 96)
    p = PackedWeight.from_gguf_blocks(kind, q, 96)
    assert torch.equal(p.dense(), torch.from_numpy(ref))  # exactly gguf's numbers
    x = torch.randn(96, generator=torch.Generator().manual_seed(1))
    want = torch.from_numpy(ref).double() @ x.double()
    for y in (p.matvec(x), p.matvec_torch(x)):
        assert y.shape == (rows,)
        assert torch.allclose(y.double(), want, rtol=1e-5, atol=1e-4)
    assert p.nbytes < ref.nbytes / 2 or rows % 64  # (a padded tile costs its zeros)


def test_packed_bf16_bits():
    w = torch.randn(80, 64).bfloat16()
    p = PackedWeight.from_bf16(w.view(torch.int16).numpy().view(np.uint16))
    assert torch.equal(p.dense(), w.float())
    x = torch.randn(64)
    want = w.double() @ x.double()
    assert torch.allclose(p.matvec(x).double(), want, rtol=1e-5, atol=1e-5)
    assert torch.allclose(p.matvec_torch(x).double(), want, rtol=1e-5, atol=1e-5)


def test_native_blocks_stay_in_the_file():
    """K-quants (and Q8/Q4 for embeddings) keep the file's rows: a view, no copy."""
    raw = np.zeros((4, 210), np.uint8)
    p = PackedWeight.from_gguf_blocks("Q6_K", raw, 256)
    assert p.raw is not None and np.shares_memory(p.raw, raw) and p.owned_bytes == 0
    q, _ = _quantized("Q8_0", 4, 64)
    assert PackedWeight.from_gguf_blocks("Q8_0", q, 64, tiles=False).owned_bytes == 0


# ----------------------------------------------------------------------------- tiny quantized GGUF

_KINDS = ["Q4_1", "Q4_0", "Q8_0"]


def write_quant_gguf(src_dir, path):
    """The tiny HF llama as a llama.cpp-style GGUF whose matrices are Q4_1/Q4_0/Q8_0 in turn."""
    return write_llama_gguf(src_dir, path, add_tokenizer=None,
                            kind_of=lambda i, a: _KINDS[i % 3] if a.ndim == 2 else None)


@pytest.fixture(scope="module")
def quant_gguf(tiny_llama_dir, tmp_path_factory):
    return write_quant_gguf(tiny_llama_dir, tmp_path_factory.mktemp("qgguf") / "tiny-q.gguf")


@pytest.fixture(scope="module")
def quant_gguf_tied(tiny_llama_tied_dir, tmp_path_factory):
    return write_quant_gguf(tiny_llama_tied_dir, tmp_path_factory.mktemp("qgguf_tied") / "tiny-qt.gguf")


def _decode_logits(model, ids: list[int], steps: list[int], plan=None) -> list[torch.Tensor]:
    """Prefill ``ids`` then feed ``steps`` one token at a time; every step's logits."""
    dev = model.device
    with torch.inference_mode():
        cache = model.new_cache(plan, max_len=len(ids) + len(steps))
        out = [model(torch.tensor([ids], device=dev), cache=cache, last_only=True)[0, -1]]
        for t in steps:
            out.append(model(torch.tensor([[t]], device=dev), cache=cache)[0, -1])
    return out


@pytest.mark.parametrize("which", ["quant_gguf", "quant_gguf_tied"])
def test_stored_model_equals_dequantized_model(which, request, exact_decode):
    path = request.getfixturevalue(which)
    dense = load_model(path, weights="float32")
    stored = load_model(path, weights="stored")
    assert stored.weights_label == "stored Q4_0+Q4_1+Q8_0"
    assert dense.weights_label == "float32"
    assert isinstance(stored.layers[0].attn.q, StoredLinear)
    assert list(stored.state_dict()) == list(dense.state_dict())
    for k, v in stored.state_dict().items():
        assert torch.equal(v, dense.state_dict()[k]), k
    ids, steps = [1, 5, 9, 2], [7, 3, 11, 40, 8]
    for a, b in zip(_decode_logits(dense, ids, steps), _decode_logits(stored, ids, steps), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    # prefill (M > 1) runs the dense weights: the same numbers bit for bit
    with torch.inference_mode():
        x = torch.tensor([ids])
        assert torch.equal(dense(x), stored(x))
    assert greedy_ids(dense, ids, 12) == greedy_ids(stored, ids, 12)


def test_stored_decode_is_the_packed_kernel(quant_gguf, monkeypatch):
    """The decode step really goes through PackedWeight.matvec (and prefill does not)."""
    stored = load_model(quant_gguf, weights="stored")
    calls = []
    real = PackedWeight.matvec
    monkeypatch.setattr(PackedWeight, "matvec", lambda self, x: calls.append(self.kind) or real(self, x))
    with torch.inference_mode():
        cache = stored.new_cache(max_len=8)
        stored(torch.tensor([[1, 2, 3]]), cache=cache, last_only=True)
        n_prefill = len(calls)
        stored(torch.tensor([[4]]), cache=cache)
    assert n_prefill == 1  # only the last position's head
    assert len(calls) - n_prefill == 7 * stored.n_layers + 1


def test_stored_with_plans_scales_and_hooks(quant_gguf, exact_decode):
    dense = load_model(quant_gguf, weights="float32")
    stored = load_model(quant_gguf, weights="stored")
    plan = [LayerCall(0), LayerCall(1, attn_scale=0.5), LayerCall(1, mlp_scale=1.5), LayerCall(3)]
    ids, steps = [3, 4, 5], [6, 7, 8]
    for a, b in zip(_decode_logits(dense, ids, steps, plan), _decode_logits(stored, ids, steps, plan), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    seen: list[str] = []

    def ablate(name, t):
        seen.append(name)
        return torch.zeros_like(t) if name == "mlp_out.1" else None

    outs = []
    for m in (dense, stored):
        with m.hooks(ablate, sites=["mlp_out"]):
            outs.append(_decode_logits(m, ids, steps))
    for a, b in zip(*outs, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    assert "mlp_out.1" in seen
    one = torch.tensor([[9]])
    la, ca = dense.run_with_cache(one, sites=["resid_out.2", "mlp_hidden"])
    lb, cb = stored.run_with_cache(one, sites=["resid_out.2", "mlp_hidden"])
    assert set(ca) == set(cb)
    assert torch.allclose(la, lb, rtol=1e-4, atol=1e-5)
    assert torch.allclose(ca["resid_out.2"], cb["resid_out.2"], rtol=1e-4, atol=1e-5)


def test_edited_dense_weight_retires_the_packed_copy(quant_gguf):
    stored = load_model(quant_gguf, weights="stored")
    lin = stored.layers[2].mlp.down
    x = torch.randn(1, 1, lin.in_features)
    with torch.no_grad():
        lin.weight.mul_(2.0)
    with torch.inference_mode():
        y = lin(x)
    assert not lin.kernel_ready  # touched: a float32 Parameter the forward uses from now on
    assert torch.equal(y, torch.nn.functional.linear(x, lin.weight))
    assert stored.layers[1].mlp.down.kernel_ready  # the others still read the packed form


def test_training_and_batches_use_the_dense_weight(quant_gguf):
    stored = load_model(quant_gguf, weights="stored")
    lin = stored.layers[0].attn.q
    x = torch.randn(1, 1, lin.in_features, requires_grad=True)
    lin(x).sum().backward()  # grad mode: dense rows, differentiable in x
    assert x.grad is not None and lin.kernel_ready
    w = lin.weight  # a weight someone touches becomes a Parameter that trains
    lin(x).sum().backward()
    assert w.grad is not None and lin.weight is w and not lin.kernel_ready


def test_torch_fallback_without_numba(quant_gguf, monkeypatch):
    stored = load_model(quant_gguf, weights="stored")
    want = _decode_logits(stored, [1, 2], [3, 4])
    monkeypatch.setattr(packed, "_KERNELS", False)
    fresh = load_model(quant_gguf, weights="stored")  # no cached kernel choice
    got = _decode_logits(fresh, [1, 2], [3, 4])
    for a, b in zip(want, got, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    assert resolve_weights("auto") == "float32"  # measured: the torch path is slower than float32


def test_resolve_weights(monkeypatch):
    monkeypatch.setattr(packed, "_KERNELS", None)
    if packed.kernels() is not None:
        assert resolve_weights(None) == "stored"
        assert resolve_weights("auto", dtype="bfloat16") == "bfloat16"
    assert resolve_weights("auto", device="cuda") == "float32"
    assert resolve_weights("BFloat16") == "bfloat16"
    with pytest.raises(UserError, match="--weights 'int3'"):
        resolve_weights("int3")
    with pytest.raises(UserError, match="CPU path"):
        resolve_weights("stored", device="cuda")


def test_converted_dir_is_served_from_its_gguf(quant_gguf, tmp_path):
    """A fetched model's HF dir (float32 conversion beside its GGUF) decodes from the GGUF blocks."""
    import shutil

    from lminspect.weights.convert import convert_gguf

    root = tmp_path / "fetched"
    root.mkdir()
    shutil.copy(quant_gguf, root / quant_gguf.name)
    convert_gguf(root / quant_gguf.name, root / "hf")
    stored = load_model(root / "hf", weights="stored")
    assert stored.weights_label == "stored Q4_0+Q4_1+Q8_0"
    direct = load_model(quant_gguf, weights="stored")
    for a, b in zip(_decode_logits(direct, [1, 2], [3, 4]), _decode_logits(stored, [1, 2], [3, 4]), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    convert_gguf(root / quant_gguf.name, root / "hf16", dtype="bfloat16")
    assert load_model(root / "hf16", weights="stored").weights_label == "stored BF16"
    (root / quant_gguf.name).unlink()  # the source is gone: plain float32
    assert load_model(root / "hf", weights="stored").weights_label.startswith("float32")


@pytest.fixture(scope="module")
def bf16_dir(tiny_llama_dir, tmp_path_factory):
    """The tiny llama saved as bfloat16 safetensors (with its tokenizer)."""
    import shutil

    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("bf16")
    AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.bfloat16).save_pretrained(out)
    shutil.copy(tiny_llama_dir / "tokenizer.json", out / "tokenizer.json")
    return out


def test_bf16_dir_keeps_its_bits(bf16_dir):
    stored = load_model(bf16_dir, weights="stored")
    dense = load_model(bf16_dir, weights="float32")  # the bf16 values, widened
    assert stored.weights_label == "stored BF16"
    assert isinstance(stored.head, StoredLinear)
    for a, b in zip(_decode_logits(dense, [1, 2, 3], [4, 5]), _decode_logits(stored, [1, 2, 3], [4, 5]), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_cli_weights_option_and_stats_line(bf16_dir):
    from typer.testing import CliRunner

    from lminspect.cli import app

    outs = {}
    for w in ("stored", "float32"):
        r = CliRunner().invoke(app, ["generate", str(bf16_dir), "Once upon", "-n", "6", "--weights", w])
        assert r.exit_code == 0, r.output
        outs[w] = r.stdout
    assert "weights: float32" in " ".join(r.stderr.split())  # (rich wraps the line at 80 columns)
    assert outs["stored"] == outs["float32"]  # greedy: the same continuation
    r = CliRunner().invoke(app, ["stitch", "run", str(bf16_dir), "--plan", "0,1,1,3", "-n", "4", "--weights", "stored"])
    assert r.exit_code == 0, r.output
    assert "weights: stored BF16" in " ".join(r.stderr.split())
    r = CliRunner().invoke(app, ["generate", str(bf16_dir), "x", "--weights", "int3"])
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        "lminspect: error: --weights 'int3': choose one of auto, stored, float32, bfloat16"]


def test_repl_open_weights(bf16_dir):
    import lminspect as li

    assert li.open(bf16_dir, weights="stored").engine.weights_label == "stored BF16"
    assert li.open(bf16_dir, weights="float32").engine.weights_label == "float32"


def test_float32_source_has_no_stored_form(tiny_llama_dir):
    m = load_model(tiny_llama_dir, weights="stored")
    assert m.weights_label == "float32 (no low-bit form stored)"
    assert not any(isinstance(x, StoredLinear) for x in m.modules())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_on_cuda_is_dense(quant_gguf):
    m = load_model(quant_gguf, weights="auto", device="cuda")
    assert m.weights_label == "float32"
    ids = [1, 2, 3]
    cpu = load_model(quant_gguf, weights="stored")
    for a, b in zip(_decode_logits(cpu, ids, [4, 5]), _decode_logits(m, ids, [4, 5]), strict=True):
        assert torch.allclose(a, b.cpu(), rtol=1e-3, atol=1e-3)


@pytest.mark.smollm2
def test_smollm2_stored_greedy_64_identical(smollm2_gguf, exact_decode):
    dense = load_model(smollm2_gguf, weights="float32")
    stored = load_model(smollm2_gguf, weights="stored")
    assert stored.weights_label == "stored Q4_1+Q8_0"
    from lminspect.tokenizer import load_tokenizer

    ids = load_tokenizer(open_store(smollm2_gguf)).encode("Once upon a time")
    a = greedy_ids(dense, ids, 64)
    b = greedy_ids(stored, ids, 64)
    assert a == b
    diffs = [(x - y).abs().max().item() for x, y in zip(_decode_logits(dense, ids, a[:16]),
                                                          _decode_logits(stored, ids, a[:16]), strict=True)]
    assert max(diffs) < 1e-3
