"""The packed-weights cache (models/packcache.py): a second open reads the tiles instead of packing."""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from test_models_stored import _decode_logits, write_quant_gguf

from lminspect.models import load_model, packcache, packed
from lminspect.models.packcache import SUFFIX

pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def qgguf(tiny_llama_dir, tmp_path_factory):
    return write_quant_gguf(tiny_llama_dir, tmp_path_factory.mktemp("pack_src") / "tiny-q.gguf")


@pytest.fixture
def model_file(qgguf, tmp_path, monkeypatch):
    """A private copy of the quantized GGUF, caches in tmp_path, every pack worth a file."""
    monkeypatch.setenv("LMINSPECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LMINSPECT_PACK_CACHE", raising=False)
    monkeypatch.setattr(packcache, "MIN_BYTES", 0)
    monkeypatch.setattr(packed, "EXACT_DECODE", True)  # float32-activation decode: the tiled layers
    d = tmp_path / "models"
    d.mkdir()
    return shutil.copy(qgguf, d / qgguf.name)


@pytest.fixture
def tile_calls(monkeypatch):
    """How many times a matrix was re-laid out in tiles (packed._tiles: 2-3 per tensor)."""
    calls = []
    real = packed._tiles
    monkeypatch.setattr(packed, "_tiles", lambda a, rows: calls.append(rows) or real(a, rows))
    return calls


def _logits(path) -> list[torch.Tensor]:
    m = load_model(path, weights="stored")
    return _decode_logits(m, [1, 5, 9], [7, 3, 11])


def _pack_beside(path):
    return path.with_name(path.name + SUFFIX)


def _user_packs(tmp_path):
    return sorted((tmp_path / "cache" / "packs").glob("*" + SUFFIX))


def test_second_open_reads_the_pack(model_file, tile_calls, monkeypatch):
    first = _logits(model_file)
    assert tile_calls and _pack_beside(model_file).is_file()
    tile_calls.clear()
    second = _logits(model_file)
    assert tile_calls == []  # nothing packed: every tile came from the file
    monkeypatch.setenv("LMINSPECT_PACK_CACHE", "0")  # the same numbers as packing afresh
    fresh = _logits(model_file)
    assert tile_calls
    for a, b, c in zip(first, second, fresh, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
    m = load_model(model_file, weights="stored")
    ref = load_model(model_file, weights="float32")
    monkeypatch.delenv("LMINSPECT_PACK_CACHE")
    cached = load_model(model_file, weights="stored")
    for k, v in cached.state_dict().items():  # the cached tiles dequantize to the file's numbers
        assert torch.equal(v, m.state_dict()[k]) and torch.equal(v, ref.state_dict()[k]), k


def test_changed_model_file_packs_again(model_file, tile_calls):
    before = _logits(model_file)
    pack = _pack_beside(model_file)
    stamp = pack.stat().st_mtime_ns
    st = model_file.stat()
    os.utime(model_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same bytes, new identity
    tile_calls.clear()
    after = _logits(model_file)
    assert tile_calls  # the old pack no longer matches the file
    assert pack.stat().st_mtime_ns != stamp  # and was replaced
    for a, b in zip(before, after, strict=True):
        assert torch.equal(a, b)
    tile_calls.clear()
    _logits(model_file)
    assert tile_calls == []


def test_read_only_model_folder_uses_the_user_cache(model_file, tmp_path, tile_calls, monkeypatch):
    folder = model_file.parent
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if os.fspath(p) == os.fspath(folder)
                        else real_access(p, mode, **kw))  # (root writes into a chmod 555 folder anyway)
    folder.chmod(0o555)
    try:
        first = _logits(model_file)
        assert not _pack_beside(model_file).exists()
        assert len(_user_packs(tmp_path)) == 1
        tile_calls.clear()
        second = _logits(model_file)
        assert tile_calls == []
    finally:
        folder.chmod(0o755)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_no_writable_place_still_loads(model_file, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False)
    assert _logits(model_file)
    assert not _pack_beside(model_file).exists() and _user_packs(tmp_path) == []


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_corrupt_pack_is_ignored_with_a_warning_and_rebuilt(model_file, tile_calls, capsys, damage):
    good = _logits(model_file)
    pack = _pack_beside(model_file)
    data = bytearray(pack.read_bytes())
    if damage == "flip":
        data[-3] ^= 0xFF  # in the last tile array
    elif damage == "truncate":
        data = data[: len(data) - 100]
    else:
        data[len(packcache.MAGIC) + 8:len(packcache.MAGIC) + 20] = b"not json at!"
    pack.write_bytes(bytes(data))
    capsys.readouterr()
    tile_calls.clear()
    again = _logits(model_file)
    err = capsys.readouterr().err
    assert "lminspect: warning:" in err and "packing again" in err and str(pack) in err
    assert err.count("\n") == 1
    assert tile_calls  # packed afresh ...
    for a, b in zip(good, again, strict=True):
        assert torch.equal(a, b)
    tile_calls.clear()
    _logits(model_file)  # ... and the pack rewritten whole
    assert tile_calls == [] and capsys.readouterr().err == ""


def test_a_file_that_is_not_ours_is_never_replaced(model_file, tmp_path):
    mine = _pack_beside(model_file)
    mine.write_bytes(b"the user's own notes")
    _logits(model_file)
    assert mine.read_bytes() == b"the user's own notes"
    assert len(_user_packs(tmp_path)) == 1  # the pack went to the user cache instead


def test_user_cache_is_bounded(model_file, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: "models" not in os.fspath(p))
    _logits(model_file)
    one = _user_packs(tmp_path)
    assert len(one) == 1
    size = one[0].stat().st_size
    monkeypatch.setattr(packcache, "USER_CACHE_MAX", size + size // 2)  # room for one pack
    other = shutil.copy(model_file, model_file.with_name("other.gguf"))
    _logits(other)
    left = _user_packs(tmp_path)
    assert len(left) == 1 and left != one  # the least recently used went


def test_small_packs_are_not_cached(model_file, monkeypatch):
    monkeypatch.setattr(packcache, "MIN_BYTES", 1 << 40)
    _logits(model_file)
    assert not _pack_beside(model_file).exists()


def test_int_decode_reads_the_file_and_writes_no_pack(model_file, monkeypatch):
    if packed.int_kernels() is None:
        pytest.skip("no integer kernels here: the tiles are the default")
    from lminspect.models import stored

    monkeypatch.setattr(packed, "EXACT_DECODE", False)
    # rows longer than TILE_IN_MAX decode on the integer kernels in the file's layout (the tiny
    # model's 64-value rows would stay tiles): as if every row were a 7B's 4096
    monkeypatch.setattr(stored, "TILE_IN_MAX", 0)
    _logits(model_file)
    assert not _pack_beside(model_file).exists()


def test_format_id_follows_the_tile_layout(monkeypatch):
    a = packcache.format_id()
    monkeypatch.setattr(packcache, "_FORMAT_ID", None)
    monkeypatch.setattr(packed, "PACK_FORMAT", packed.PACK_FORMAT + 1)
    assert packcache.format_id() != a


def test_gguf_type_table_is_gguf_pys():
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    from lminspect.weights.gguf_format import _GGML_TYPES

    for tid, (name, block, size) in _GGML_TYPES.items():
        qt = GGMLQuantizationType(tid)
        assert (qt.name, *GGML_QUANT_SIZES[qt]) == (name, block, size)


def test_converted_dir_parses_its_gguf_once(model_file, monkeypatch):
    """The memory check and the load share one parse of the GGUF a fetched dir is served from."""
    from lminspect.weights import gguf_format
    from lminspect.weights.convert import convert_gguf

    convert_gguf(model_file, model_file.parent / "hf")
    parses = []
    real = gguf_format.GGUFFile.__init__
    monkeypatch.setattr(gguf_format.GGUFFile, "__init__", lambda self, p: parses.append(p) or real(self, p))
    m = load_model(model_file.parent / "hf", weights="stored")
    assert m.weights_label == "stored Q4_0+Q4_1+Q8_0"
    assert len(parses) == 1
