"""The integer-dot decode kernels (models/packed_int.py): GGUF rows times int8-quantized activations.

Tolerance: quantizing x to int8 per 32 values (``dx = max|x| / 127``) moves each element by at
most ``dx / 2``, so a row's result is within ``sum over 32-blocks of dx / 2 * sum |d q|`` of the
exact product of the dequantized row and x (``d q``: the block's values without their minimum),
plus float32 rounding (1e-5 of ``sum |w| |x|``). Each kind is checked against that bound, on odd
shapes, special vectors and through a model (plain and tied head)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lminspect.models import load_model, packed
from lminspect.models import stored as stored_mod
from lminspect.models.packed import INT_KINDS, PackedWeight
from lminspect.models.stored import StoredLinear

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import shaped_files as sf  # noqa: E402
from test_models_stored import _decode_logits, quant_gguf, quant_gguf_tied  # noqa: E402, F401

pytest.importorskip("numba")
pytest.importorskip("gguf")
if packed.int_kernels() is None:
    pytest.skip("the integer kernels do not compile here", allow_module_level=True)

_MIN_AT = {"Q4_1": (20, 2), "Q4_K": (144, 2), "Q5_K": (176, 2)}  # (block bytes, offset of the f16 min)


def _bound(kind: str, raw: np.ndarray, cols: int, x: torch.Tensor) -> torch.Tensor:
    """The int8 activations' error bound per row (module doc)."""
    dx = torch.from_numpy(np.abs(x.numpy().reshape(-1, 32)).max(1) / np.float32(127)).double()
    w = PackedWeight.from_gguf_blocks(kind, raw, cols, tiles=False).dense().double().abs()
    if kind in _MIN_AT:  # d q alone: the minimums zeroed
        bb, at = _MIN_AT[kind]
        raw = raw.copy()
        raw.reshape(raw.shape[0], -1, bb)[:, :, at:at + 2] = 0
    dq = PackedWeight.from_gguf_blocks(kind, raw, cols, tiles=False).dense().double().abs()
    return dq.view(dq.shape[0], -1, 32).sum(2) @ dx / 2 + 1e-5 * (w @ x.double().abs()) + 1e-30


def _check(kind: str, raw: np.ndarray, cols: int, x: torch.Tensor) -> torch.Tensor:
    p = PackedWeight.from_gguf_blocks(kind, raw, cols, tiles=False)
    y = p.matvec(x)
    assert y.shape == (raw.shape[0],) and y.dtype == torch.float32
    want = p.dense().double() @ x.double()
    err = (y.double() - want).abs()
    bound = _bound(kind, raw, cols, x)
    assert bool((err <= bound).all()), f"{kind}: worst err/bound {float((err / bound).max()):.3f}"
    return y


@pytest.mark.parametrize("kind", INT_KINDS)
@pytest.mark.parametrize("rows", [1, 7, 33, 100])
def test_int_matvec_within_the_int8_bound(kind, rows):
    cols = 768 if kind.endswith("_K") else 96  # 3 super-blocks / 3 blocks
    rng = np.random.default_rng(rows)
    raw = sf.random_blocks(kind, rows, cols, rng)
    x = torch.from_numpy(rng.standard_normal(cols).astype(np.float32))
    _check(kind, raw, cols, x)


@pytest.mark.parametrize("kind", INT_KINDS)
def test_int_matvec_special_vectors(kind):
    cols = 512 if kind.endswith("_K") else 64
    rng = np.random.default_rng(5)
    raw = sf.random_blocks(kind, 9, cols, rng)
    zero = torch.zeros(cols)
    y = _check(kind, raw, cols, zero)
    assert torch.equal(y, torch.zeros(9))  # no minimum term without activations
    spike = torch.zeros(cols)
    spike[cols // 2 + 3] = 1e4  # one large value, the rest of its block 0: exact after int8
    _check(kind, raw, cols, spike)
    mixed = torch.from_numpy(rng.standard_normal(cols).astype(np.float32))
    mixed[:32] *= 1e-6  # blocks of very different magnitudes
    mixed[32:64] = -3.0
    _check(kind, raw, cols, mixed)


@pytest.mark.parametrize("kind", ["Q4_K", "Q4_0"])
def test_int_matvec_same_numbers_on_any_thread_count(kind):
    """Rows are split over threads, each row's sum in one order: 1 and 2 threads agree bit for bit."""
    cols = 512
    rng = np.random.default_rng(2)
    raw = sf.random_blocks(kind, 130, cols, rng)
    x = torch.from_numpy(rng.standard_normal(cols).astype(np.float32))
    p = PackedWeight.from_gguf_blocks(kind, raw, cols, tiles=False)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = p.matvec(x)
        torch.set_num_threads(2)
        b = p.matvec(x)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(a, b)


def test_exact_decode_uses_the_float_kernels(monkeypatch):
    rng = np.random.default_rng(3)
    raw = sf.random_blocks("Q4_K", 16, 256, rng)
    x = torch.from_numpy(rng.standard_normal(256).astype(np.float32))
    p = PackedWeight.from_gguf_blocks("Q4_K", raw, 256)
    monkeypatch.setattr(packed, "EXACT_DECODE", True)
    assert torch.equal(p.matvec(x), p.matvec_float(x))


@pytest.mark.parametrize("which", ["quant_gguf", "quant_gguf_tied"])
def test_model_decode_on_int_kernels(which, request, monkeypatch):
    """A model's decode steps on the int8 path: the file's rows (no tile copy), logits close to the
    dense model's (int8 activations), prefill still bit for bit."""
    monkeypatch.setattr(stored_mod, "TILE_IN_MAX", 0)  # these tiny rows would be tiles
    path = request.getfixturevalue(which)
    dense = load_model(path, weights="float32")
    stored = load_model(path, weights="stored")
    lins = [m for m in stored.modules() if isinstance(m, StoredLinear)]
    assert lins and all(m.packed.raw is not None and m.packed.owned_bytes == 0 for m in lins)
    ids, steps = [1, 5, 9, 2], [7, 3, 11, 40, 8]
    for a, b in zip(_decode_logits(dense, ids, steps), _decode_logits(stored, ids, steps), strict=True):
        assert float((a - b).abs().max()) <= 0.05 * float(a.abs().max())
    with torch.inference_mode():
        x = torch.tensor([ids])
        assert torch.equal(dense(x), stored(x))


def test_generic_ir_gives_the_same_numbers(tmp_path):
    """The generic vector IR (what non-AVX2 hosts run) against the host's path, in a fresh process
    with its own numba cache: the same integer sums, floats added in another lane order."""
    import json
    import os
    import subprocess

    code = """
import json, sys, numpy as np, torch
sys.path.insert(0, BENCH)
import shaped_files as sf
from lminspect.models.packed import INT_KINDS, PackedWeight
rng = np.random.default_rng(4)
out = {}
for kind in INT_KINDS:
    cols = 512 if kind.endswith("_K") else 64
    raw = sf.random_blocks(kind, 5, cols, rng)
    x = torch.from_numpy(rng.standard_normal(cols).astype(np.float32))
    out[kind] = PackedWeight.from_gguf_blocks(kind, raw, cols, tiles=False).matvec(x).tolist()
print(json.dumps(out))
""".replace("BENCH", repr(str(Path(__file__).resolve().parents[1] / "benchmarks")))
    runs = []
    for generic in ("", "1"):
        env = {**os.environ, "LMINSPECT_GENERIC_IR": generic, "NUMBA_CACHE_DIR": str(tmp_path / f"nc{generic}"),
               "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    for kind in INT_KINDS:
        a, b = torch.tensor(runs[0][kind]), torch.tensor(runs[1][kind])
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(a.abs().max())), kind


def test_wide_q4_0_rows_stay_in_the_file(tmp_path):
    """Q4_0 layers with rows wider than TILE_IN_MAX read the file (a 7B takes about its file in
    memory); narrow ones are tiles (a copy: faster for short rows)."""
    s = sf.shape(vocab=300, dim=1280, layers=1, heads=10, kv_heads=2, ffn=512, context=64)
    path = sf.write_kquant_gguf(tmp_path / "q40.gguf", s, fill="random",
                                kind_of=lambda name, shp: "F32" if len(shp) == 1 else "Q4_0")
    m = load_model(path, weights="stored")
    assert m.layers[0].attn.q.packed.raw is not None and m.layers[0].attn.q.packed.owned_bytes == 0
    assert m.layers[0].mlp.down.packed.tiled  # 512-value rows
