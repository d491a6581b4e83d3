"""Corrupt files: each ends in exit code 2 and one line `lminspect: error: ...` naming the file."""

from __future__ import annotations

import json
import struct

import pytest
from typer.testing import CliRunner

from lminspect.cli import app


def st_bytes(header: dict, data: bytes, hlen: int | None = None) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h) if hlen is None else hlen) + h + data


GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}


def _cases():
    yield "truncated", st_bytes(GOOD, b"\0" * 10), "truncated"
    yield "tiny", b"\x01\x02", "too small"
    yield "hlen_gt_file", st_bytes(GOOD, b"\0" * 12, hlen=10_000), "larger than the file"
    yield "hlen_huge", st_bytes(GOOD, b"\0" * 12, hlen=2**62), "exceeds"
    yield "bad_json", struct.pack("<Q", 5) + b"{oops" , "not valid JSON"
    yield "overlap", st_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                               "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8), "overlaps"
    yield "out_of_range", st_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                    "b": {"dtype": "F32", "shape": [1], "data_offsets": [1000, 1004]}}, b"\0" * 8), "gap"
    yield "unknown_dtype", st_bytes({"a": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, b"\0" * 16), "unknown dtype"
    yield "size_mismatch", st_bytes({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8), "needs 12"
    yield "trailing", st_bytes(GOOD, b"\0" * 20), "trailing bytes"
    yield "overflow", st_bytes({"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}}, b"\0" * 8), "overflows"
    yield "not_object", struct.pack("<Q", 2) + b"[]", "not a JSON object"


CASES = list(_cases())


@pytest.mark.parametrize("name,data,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_safetensors(tmp_path, name, data, needle):
    p = tmp_path / f"{name}.safetensors"
    p.write_bytes(data)
    r = CliRunner().invoke(app, ["inspect", str(p)])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1, r.output
    assert lines[0].startswith("lminspect: error: ") and str(p) in lines[0] and needle in lines[0], lines[0]
    assert "Traceback" not in r.output


def _gguf_good(tmp_path):
    import gguf
    import numpy as np

    p = tmp_path / "good.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_block_count(1)
    w.add_tensor("blk.0.attn_norm.weight", np.ones(32, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return p.read_bytes()


def test_bad_gguf(tmp_path):
    good = _gguf_good(tmp_path)
    cases = {
        "badmagic.gguf": (b"GGUX" + good[4:], "bad magic"),
        "badversion.gguf": (good[:4] + struct.pack("<I", 99) + good[8:], "version 99"),
        "truncated.gguf": (good[:60], "truncated"),
        "truncdata.gguf": (good[:-16], "past the end"),
        "empty.gguf": (b"", "bytes"),
    }
    for fname, (data, needle) in cases.items():
        p = tmp_path / fname
        p.write_bytes(data)
        r = CliRunner().invoke(app, ["inspect", str(p)])
        assert r.exit_code == 2, (fname, r.output)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lminspect: error: "), (fname, r.output)
        assert str(p) in lines[0] and needle in lines[0], (fname, lines[0])
    ok = CliRunner().invoke(app, ["inspect", str(tmp_path / "good.gguf")])
    assert ok.exit_code == 0, ok.output


def test_dir_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    r = CliRunner().invoke(app, ["inspect", str(tmp_path)])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [r.output.strip()]
    assert "no weights" in r.output and str(tmp_path) in r.output


def test_bad_config_json(tmp_path):
    (tmp_path / "config.json").write_text("{nope")
    r = CliRunner().invoke(app, ["inspect", str(tmp_path)])
    assert r.exit_code == 2 and "config.json" in r.output and len(r.output.strip().splitlines()) == 1


def test_missing_shard(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "gone.safetensors"}}))
    r = CliRunner().invoke(app, ["inspect", str(tmp_path)])
    assert r.exit_code == 2 and "gone.safetensors" in r.output


def test_missing_file(tmp_path):
    r = CliRunner().invoke(app, ["inspect", str(tmp_path / "nope.safetensors")])
    assert r.exit_code == 2 and "no such file" in r.output
