"""HF conventions: chat templates in chat_template.jinja (transformers 5's layout), ordinary
permissions on written folders, and the source quantization a conversion records."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest
from test_tui_helpers import wait_until
from test_weights_gguf import write_llama_gguf
from typer.testing import CliRunner

from lminspect.cli import app
from lminspect.weights import open_store

TEMPLATE = ("{% for m in messages %}<|endoftext|>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant:{% endif %}")


@pytest.fixture
def saved_by_transformers(tiny_llama_dir, tmp_path):
    """The tiny llama with a tokenizer saved by the installed transformers (chat_template.jinja)."""
    from transformers import PreTrainedTokenizerFast

    d = tmp_path / "tf5"
    shutil.copytree(tiny_llama_dir, d)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(d / "tokenizer.json"), eos_token="<|endoftext|>")
    tok.chat_template = TEMPLATE
    tok.save_pretrained(d)
    assert (d / "chat_template.jinja").is_file()
    assert "chat_template" not in json.loads((d / "tokenizer_config.json").read_text())
    return d


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LMINSPECT_CACHE", str(tmp_path / "cache"))


def test_chat_template_jinja_is_read_and_generate_chat_works(saved_by_transformers):
    from lminspect.tokenizer import load_tokenizer

    tok = load_tokenizer(open_store(saved_by_transformers))
    assert tok.chat_template == TEMPLATE
    msgs = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(msgs) == "<|endoftext|>user: hi\nassistant:"
    r = CliRunner().invoke(app, ["generate", str(saved_by_transformers), "hi", "--chat", "-n", "3"])
    assert r.exit_code == 0, r.output


def test_jinja_file_wins_over_tokenizer_config_and_named_list_is_read(tiny_llama_dir, tmp_path):
    from lminspect.weights.open import read_chat_template

    d = tmp_path / "m"
    shutil.copytree(tiny_llama_dir, d)
    named = [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": named}))
    assert read_chat_template(d) == "D" and open_store(d).chat_template == "D"
    (d / "chat_template.jinja").write_text("J")
    assert read_chat_template(d) == "J"  # transformers: the file takes priority


def test_stitch_export_writes_chat_template_jinja_that_transformers_loads(saved_by_transformers, tmp_path):
    from transformers import AutoTokenizer

    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["stitch", "export", str(saved_by_transformers), str(out), "--plan", "0-1,1-3"])
    assert r.exit_code == 0, r.output
    assert (out / "chat_template.jinja").read_text() == TEMPLATE
    assert "chat_template" not in json.loads((out / "tokenizer_config.json").read_text())
    msgs = [{"role": "user", "content": "hi"}]
    ref = AutoTokenizer.from_pretrained(out).apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    from lminspect.tokenizer import load_tokenizer

    assert load_tokenizer(open_store(out)).apply_chat_template(msgs) == ref


def _modes(folder) -> set[int]:
    return {stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.iterdir()] if not p.is_dir()} | {
        stat.S_IMODE(folder.stat().st_mode)}


@pytest.mark.parametrize("mask, dir_mode, file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_written_folders_get_ordinary_permissions(tiny_llama_dir, tmp_path, mask, dir_mode, file_mode):
    from lminspect.weights.convert import convert_gguf

    old = os.umask(mask)
    try:
        gguf = write_llama_gguf(tiny_llama_dir, tmp_path / "t.gguf")
        conv = convert_gguf(gguf, tmp_path / "conv")
        r = CliRunner().invoke(app, ["stitch", "export", str(tiny_llama_dir), str(tmp_path / "exp"), "--plan", "0-3"])
        assert r.exit_code == 0, r.output
    finally:
        os.umask(old)
    for folder in (conv, tmp_path / "exp"):
        assert stat.S_IMODE(folder.stat().st_mode) == dir_mode, folder
        assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {file_mode}, folder


@pytest.fixture
def converted(tiny_llama_dir, tmp_path):
    from lminspect.weights.convert import convert_gguf

    return convert_gguf(write_llama_gguf(tiny_llama_dir, tmp_path / "t.gguf"), tmp_path / "conv")


def test_convert_records_source_quantization(converted):
    from lminspect.weights.provenance import dtype_label, model_dtype_label, source_dtype

    rec = json.loads((converted / "config.json").read_text())["lminspect_source"]
    assert rec["format"] == "gguf" and rec["file"] == "t.gguf" and rec["quantization"] == "Q8_0"
    assert rec["tensor_types"] == {"F32": 38, "Q8_0": 1}
    s = open_store(converted)
    assert json.loads(s.metadata["lminspect_source"])["tensors"]["model.layers.0.mlp.up_proj.weight"] == "Q8_0"
    assert source_dtype(s, "layers.0.mlp.up.weight") == "Q8_0" and source_dtype(s, "norm.weight") == "F32"
    assert dtype_label(s, "layers.0.mlp.up.weight") == "F32 (dequantized from Q8_0)"
    assert dtype_label(s, "layers.0.mlp.down.weight") == "F32"
    assert model_dtype_label(s) == "F32 (dequantized from Q8_0)"
    # a lone .safetensors file (no config.json beside it) still knows
    lone = converted.parent / "lone.safetensors"
    shutil.copy(converted / "model.safetensors", lone)
    assert dtype_label(open_store(lone), "layers.0.mlp.up.weight") == "F32 (dequantized from Q8_0)"


def test_source_quantization_shown_in_inspect_stats_and_repl(converted, tiny_llama_dir):
    import lminspect as li

    r = CliRunner().invoke(app, ["inspect", str(converted)])
    assert r.exit_code == 0, r.output
    assert "arch llama, F32 (dequantized from Q8_0)]" in r.output
    up = next(line for line in r.output.splitlines() if "layers.0.mlp.up.weight" in line)
    assert "F32 (dequantized from Q8_0)" in up
    r = CliRunner().invoke(app, ["stats", str(converted), "-t", "layers.0.mlp.*", "--json", "--no-svd"])
    rows = {x["canonical"]: x for x in map(json.loads, r.stdout.splitlines())}
    assert rows["layers.0.mlp.up.weight"]["source_dtype"] == "Q8_0"
    assert rows["layers.0.mlp.down.weight"]["source_dtype"] == "F32"
    r = CliRunner().invoke(app, ["stats", str(converted), "-t", "norm.weight"])
    assert "weights F32 (dequantized from Q8_0)" in r.output
    m = li.open(converted)
    assert "F32 (dequantized from Q8_0)" in repr(m).splitlines()[0]
    assert "dtype F32 (dequantized from Q8_0)" in repr(m.tensors["layers.0.mlp.up.weight"])
    assert "dequantized" not in repr(li.open(tiny_llama_dir)) and "dequantized" not in CliRunner().invoke(
        app, ["inspect", str(tiny_llama_dir)]).output


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_tui_header_says_dequantized(converted, tmp_path, anyio_backend):
    from textual.widgets import Static

    from lminspect.tui.app import LMInspectApp

    tui = LMInspectApp(str(converted), runs_dir=tmp_path / "runs", remember=False)
    async with tui.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: tui.store is not None, what="the model to open")
        await pilot.pause()
        assert "F32 (dequantized from Q8_0)" in tui.sub_title
        tui.query_one("#weights-pane").show_tensor("layers.0.mlp.up.weight")
        await pilot.pause()
        assert "dtype F32 (dequantized from Q8_0)" in str(tui.query_one("#tensor-header", Static).render())


def test_stitch_export_of_a_converted_model_keeps_the_source_record(converted, tmp_path):
    from lminspect.weights.provenance import dtype_label

    out = tmp_path / "exp"
    r = CliRunner().invoke(app, ["stitch", "export", str(converted), str(out), "--plan", "1,0,3"])
    assert r.exit_code == 0, r.output
    s = open_store(out)
    assert json.loads((out / "config.json").read_text())["lminspect_source"]["quantization"] == "Q8_0"
    # output layer 1 is source layer 0, whose mlp.up was the Q8_0 tensor
    assert dtype_label(s, "layers.1.mlp.up.weight") == "F32 (dequantized from Q8_0)"
    assert dtype_label(s, "layers.0.mlp.up.weight") == "F32" and dtype_label(s, "norm.weight") == "F32"


def test_config_only_record_labels_matrices(converted, tmp_path):
    from lminspect.weights.provenance import dtype_label

    d = tmp_path / "resaved"  # as transformers' save_pretrained leaves it: the config keeps the record
    shutil.copytree(converted, d)
    from safetensors.torch import load_file, save_file

    save_file(load_file(d / "model.safetensors"), str(d / "model.safetensors"), metadata={"format": "pt"})
    s = open_store(d)
    assert dtype_label(s, "layers.0.attn.q.weight") == "F32 (dequantized from Q8_0)"
    assert dtype_label(s, "norm.weight") == "F32"
