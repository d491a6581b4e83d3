"""`lminspect fetch smollm2` end to end into an empty cache: download, extract, convert, idempotent."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lminspect.cli import app


@pytest.mark.smollm2
@pytest.mark.xdist_group("smollm2")
def test_fetch_into_empty_cache_is_idempotent(tmp_path, monkeypatch):
    monkeypatch.setenv("LMINSPECT_CACHE", str(tmp_path / "cache"))
    r = CliRunner().invoke(app, ["fetch", "smollm2"])
    assert r.exit_code == 0, r.output
    root = tmp_path / "cache" / "models" / "smollm2"
    gguf = root / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert gguf.stat().st_size > 90_000_000
    assert (root / "hf" / "config.json").is_file() and (root / "hf" / "tokenizer.json").is_file()
    assert str(root) in r.output.replace("\n", "")
    stamp = (gguf.stat().st_mtime_ns, (root / "hf" / "model.safetensors").stat().st_mtime_ns)
    r2 = CliRunner().invoke(app, ["fetch", "smollm2"])  # second call: nothing downloaded or rewritten
    assert r2.exit_code == 0, r2.output
    assert stamp == (gguf.stat().st_mtime_ns, (root / "hf" / "model.safetensors").stat().st_mtime_ns)
    from lminspect.weights import open_store

    store = open_store("smollm2")
    assert store.name == "smollm2" and store.arch == "llama" and store.config["num_hidden_layers"] == 30
