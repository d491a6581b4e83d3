"""Weights used as stored (issue 26): K-quant blocks and bf16 bits from the memory map, no
whole-model float32 copy, exact dequantization, and a memory check that counts real copies.

Small shapes through the same code paths (widths of 256 so K-quant super-blocks fit); the
7B-shaped run is ``slow`` (LMINSPECT_SLOW=1)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lminspect.errors import UserError
from lminspect.generate import greedy_ids
from lminspect.models import load_model, packed
from lminspect.models.packed import PackedWeight
from lminspect.models.stored import StoredEmbedding, StoredLinear

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import shaped_files as sf  # noqa: E402
from test_models_stored import exact_decode  # noqa: E402, F401 (a fixture)

gguf = pytest.importorskip("gguf")
QT = gguf.GGMLQuantizationType
SMALL = sf.shape(vocab=300, dim=256, layers=2, heads=4, kv_heads=2, ffn=512, context=128)
ALL_KINDS = ["Q4_K", "Q5_K", "Q6_K", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_dequantization_is_gguf_py_bit_for_bit(kind):
    rng = np.random.default_rng(ALL_KINDS.index(kind))
    raw = sf.random_blocks(kind, 24, 512, rng)
    raw[3, :2] = np.array([0x00, 0x7C], np.uint8)  # an infinite scale and a subnormal one: still gguf's numbers
    raw[5, :2] = np.array([0x01, 0x00], np.uint8)
    with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 in gguf-py's own arithmetic
        want = gguf.quants.dequantize(raw, QT[kind]).reshape(24, 512)
    p = PackedWeight.from_gguf_blocks(kind, raw, 512, tiles=False)
    got = p.dense().numpy()
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))  # nan payloads and signed zeros too
    rows = np.array([7, 0, 23, 7])
    assert np.array_equal(p.dense(rows).numpy().view(np.uint32), want[rows].view(np.uint32))
    assert np.array_equal(p.dense(slice(4, 9)).numpy(), want[4:9])


@pytest.mark.parametrize("kind", ALL_KINDS + ["BF16", "F16"])
def test_matvec_on_the_file_layout_is_the_dense_product(kind):
    rng = np.random.default_rng(1)
    if kind in ("BF16", "F16"):
        w = (0.05 * rng.standard_normal((40, 512))).astype(np.float32)
        p = (PackedWeight.from_bf16(sf._bf16_bits(w)) if kind == "BF16"
             else PackedWeight.from_f16(w.astype(np.float16)))
    else:
        p = PackedWeight.from_gguf_blocks(kind, sf.random_blocks(kind, 40, 512, rng), 512, tiles=False)
    dense = p.dense().double()
    x = torch.from_numpy(rng.standard_normal(512).astype(np.float32))
    want = dense @ x.double()
    tol = 1e-5 * float(dense.abs().sum(1).max() * x.abs().max())
    for y in (p.matvec_float(x), p.matvec_torch(x)):
        assert y.shape == (40,)
        assert float((y.double() - want).abs().max()) <= tol


@pytest.fixture(scope="module")
def kquant_gguf(tmp_path_factory):
    return sf.write_kquant_gguf(tmp_path_factory.mktemp("kq") / "tiny-q4km.gguf", SMALL, fill="random")


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory):
    return sf.write_bf16_dir(tmp_path_factory.mktemp("bf16big"), SMALL, fill="random")


def _steps(model, ids, steps):
    with torch.inference_mode():
        cache = model.new_cache(max_len=len(ids) + len(steps))
        out = [model(torch.tensor([ids]), cache=cache, last_only=True)[0, -1]]
        for t in steps:
            out.append(model(torch.tensor([[t]]), cache=cache)[0, -1])
    return out


@pytest.mark.usefixtures("exact_decode")
@pytest.mark.parametrize("which", ["kquant_gguf", "bf16_dir"])
def test_stored_model_is_the_dequantized_model(which, request):
    """Prefill bit for bit (exact rows, the same F.linear), decode through the kernels close."""
    path = request.getfixturevalue(which)
    dense = load_model(path, weights="float32")
    stored = load_model(path, weights="stored")
    assert stored.weights_label == ("stored Q4_K+Q6_K" if which == "kquant_gguf" else "stored BF16")
    assert isinstance(stored.layers[1].mlp.down, StoredLinear)
    assert isinstance(stored.embed.tokens, StoredEmbedding)
    ids = [1, 5, 9, 2, 44]
    with torch.inference_mode():
        assert torch.equal(dense(torch.tensor([ids])), stored(torch.tensor([ids])))
    for a, b in zip(_steps(dense, ids, [7, 3, 11]), _steps(stored, ids, [7, 3, 11]), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()))
    assert greedy_ids(dense, ids, 6) == greedy_ids(stored, ids, 6)
    # nothing was materialized along the way: every matrix still reads the file
    assert all(m.kernel_ready for m in stored.modules() if isinstance(m, StoredLinear))
    assert stored.embed.tokens._parameters["weight"] is None


def test_prefill_in_chunks_equals_whole(kquant_gguf, monkeypatch):
    """A matrix bigger than a chunk is made a few rows at a time (and q/k rows permuted): same numbers."""
    stored = load_model(kquant_gguf, weights="stored")
    ids = torch.tensor([[3, 1, 4, 1, 5, 9]])
    with torch.inference_mode():
        whole = stored(ids)
        monkeypatch.setattr(packed, "CHUNK_ELEMENTS", 256 * 40)  # 40 rows per chunk: ragged last chunk
        chunked = stored(ids)
    assert torch.allclose(whole, chunked, rtol=1e-5, atol=1e-5)


def _inside(t: torch.Tensor | np.ndarray, mm: np.ndarray) -> bool:
    lo = mm.ctypes.data
    ptr = t.data_ptr() if isinstance(t, torch.Tensor) else t.ctypes.data
    return lo <= ptr < lo + mm.nbytes


def test_bf16_is_used_in_place(bf16_dir):
    """No float32 (or bf16) copy at load: the weights are views of the file's memory map."""
    from lminspect.weights import open_store

    store = open_store(bf16_dir)
    mm = next(iter(store.st_files.values()))._map()
    stored = load_model(store, weights="stored")
    lin = stored.layers[0].attn.q
    assert _inside(lin.packed.raw, mm) and lin.packed.owned_bytes == 0
    assert _inside(stored.embed.tokens.packed.raw, mm)
    as_bf16 = load_model(store, dtype="bfloat16")  # the dense bf16 model: the same bits, no copy
    assert as_bf16.layers[0].attn.q.weight.dtype == torch.bfloat16
    assert _inside(as_bf16.layers[0].attn.q.weight, mm) and _inside(as_bf16.head.weight, mm)
    assert torch.equal(as_bf16.layers[0].attn.q.weight.float(), lin.weight)


@pytest.mark.usefixtures("exact_decode")
def test_touching_a_weight_materializes_only_it(kquant_gguf):
    stored = load_model(kquant_gguf, weights="stored")
    dense = load_model(kquant_gguf, weights="float32")
    sd = stored.state_dict()  # export: dequantized on request, nothing kept
    assert list(sd) == list(dense.state_dict())
    assert all(torch.equal(v, dense.state_dict()[k]) for k, v in sd.items())
    assert stored.layers[0].attn.q.kernel_ready
    with torch.no_grad():
        stored.layers[1].attn.k.weight.mul_(0.0)
        dense.layers[1].attn.k.weight.mul_(0.0)
    touched = [n for n, m in stored.named_modules() if isinstance(m, StoredLinear) and not m.kernel_ready]
    assert touched == ["layers.1.attn.k"]
    stored.layers[0].mlp.up.weight = torch.nn.Parameter(dense.layers[0].mlp.up.weight * 2)
    with torch.no_grad():
        dense.layers[0].mlp.up.weight.mul_(2)
    ids = [4, 8, 15, 16]
    for a, b in zip(_steps(dense, ids, [23, 42]), _steps(stored, ids, [23, 42]), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(a.abs().max()))


def test_memory_check_counts_copies_not_the_mapped_file(kquant_gguf, bf16_dir, monkeypatch):
    """Refuse only what will really be allocated, and say how much and why."""
    from lminspect import limits

    # less than the float32 model (5.3 MB), more than stored's buffers (1.2 MB)
    monkeypatch.setattr(limits, "available_memory", lambda: 3 << 20)
    load_model(kquant_gguf, weights="stored")
    with pytest.raises(UserError, match=r"converted weights .* file stays memory-mapped.*more than the"):
        load_model(kquant_gguf, weights="float32")
    monkeypatch.setattr(limits, "available_memory", lambda: 1 << 20)
    with pytest.raises(UserError, match="needs about"):
        load_model(bf16_dir, weights="stored")
    monkeypatch.setenv(limits.ENV, "1")
    load_model(bf16_dir, weights="stored")


def test_kv_cache_is_checked(bf16_dir, monkeypatch):
    from lminspect import limits

    m = load_model(bf16_dir, weights="stored")
    monkeypatch.setattr(limits, "available_memory", lambda: 1 << 16)
    with pytest.raises(UserError, match="KV cache of 1 x 100 tokens"):
        m.new_cache(max_len=100)


def test_cli_generate_on_kquants(kquant_gguf):
    from typer.testing import CliRunner

    from lminspect.cli import app

    r = CliRunner().invoke(app, ["generate", str(kquant_gguf), "Once upon", "-n", "4"])
    assert r.exit_code == 0, r.output
    assert "weights: stored Q4_K+Q6_K" in " ".join(r.stderr.split())


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LMINSPECT_SLOW"), reason="slow: set LMINSPECT_SLOW=1")
def test_7b_shaped_q4_k_m_in_its_file_size(tmp_path):
    """A Llama-2-7B-shaped Q4_K_M GGUF (sparse zeros: no disk) loads without copies and decodes
    a token with the process holding about the file plus per-layer buffers."""
    import resource
    import subprocess

    path = sf.write_kquant_gguf(tmp_path / "llama7b-q4km.gguf", sf.shape())
    code = (
        "import resource, torch; from lminspect.models import load_model;"
        f"m = load_model({str(path)!r}, weights='stored'); r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        "c = m.new_cache(max_len=8)\n"
        "with torch.inference_mode():\n"
        "    m(torch.tensor([[1, 2, 3]]), cache=c, last_only=True); m(torch.tensor([[4]]), cache=c)\n"
        "print(r0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    after_load, peak = (int(v) * 1024 for v in out.stdout.split()[-2:])
    assert after_load < 1.5e9  # no copies at load (the interpreter, torch and numba included)
    assert peak < path.stat().st_size + 1.5e9
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 < 4e9  # this process built a sparse file
