"""Every workflow on a model kept in its stored form (issue 26): no whole-model float32 copy.

A tiny Q4_K_M-like GGUF and a bf16 directory (benchmarks/shaped_files.py, the files the 7B
benchmark builds, at small shapes) go through each command with its defaults. A stored weight
made a float32 Parameter (``StoredLinear.materialize``) is recorded; none may be. The 7B-shaped
run is ``slow`` (LMINSPECT_SLOW=1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lminspect.cli import app
from lminspect.models import load_model
from lminspect.models.stored import StoredEmbedding, StoredLinear

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import shaped_files as sf  # noqa: E402

pytest.importorskip("gguf")
SMALL = sf.shape(vocab=300, dim=256, layers=2, heads=4, kv_heads=2, ffn=512, context=2048)  # cloze items are ~1000 byte tokens
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def kquant_gguf(tmp_path_factory):
    return sf.write_kquant_gguf(tmp_path_factory.mktemp("wkq") / "tiny-q4km.gguf", SMALL, fill="random")


@pytest.fixture(scope="module")
def bf16_dir(tmp_path_factory):
    return sf.write_bf16_dir(tmp_path_factory.mktemp("wbf16"), SMALL, fill="random")


class _Made(list):
    loaded: list


@pytest.fixture
def materialized(monkeypatch):
    """The names of the stored weights made float32 Parameters during the test (and the models
    loaded, to check they were opened in the stored form)."""
    made = _Made()
    loaded: list = []
    lin, emb = StoredLinear.materialize, StoredEmbedding.materialize

    def spy(real):
        def inner(self):
            made.append(self.extra_repr())
            return real(self)
        return inner

    monkeypatch.setattr(StoredLinear, "materialize", spy(lin))
    monkeypatch.setattr(StoredEmbedding, "materialize", spy(emb))
    import lminspect.models as models

    real_load = models.load_model

    def load(*a, **kw):
        m = real_load(*a, **kw)
        loaded.append(m)
        return m

    monkeypatch.setattr(models, "load_model", load)
    made.loaded = loaded
    return made


def _commands(model: str, tmp: Path) -> dict[str, list[str]]:
    return {
        "stitch run --compare": ["stitch", "run", model, "Once upon a time", "--plan", "0,1,1", "--compare", "-n", "3"],
        "stitch sweep": ["stitch", "sweep", model, "--eval", "cloze", "--limit", "2", "--plan", "rep=0,1,1",
                         "--out", str(tmp / "sweep")],
        "eval": ["eval", model, "--limit", "2"],
        "lens": ["lens", model, PROMPT],
        "dla": ["dla", model, PROMPT, "--target", "id:80"],
        "patch": ["patch", model, "--clean", PROMPT, "--corrupt", "The capital of Greece is",
                  "--metric", "logit_diff: id:80,id:82"],
        "attention": ["attention", model, "Once upon a time"],
        "activations": ["activations", model, "--out", str(tmp / "acts"), "--tokens", "600"],
    }


@pytest.mark.parametrize("which", ["kquant_gguf", "bf16_dir"])
@pytest.mark.parametrize("command", list(_commands("M", Path())))
def test_workflow_keeps_weights_stored(which, command, request, tmp_path, materialized):
    model = str(request.getfixturevalue(which))
    r = CliRunner().invoke(app, _commands(model, tmp_path)[command])
    assert r.exit_code == 0, r.output
    assert materialized.loaded, "the command loaded no model"
    for m in materialized.loaded:
        assert m.weights_label.startswith("stored"), m.weights_label
    assert materialized == [], f"{command} made float32 copies of {materialized}"


def test_dla_on_stored_weights_equals_dense(kquant_gguf):
    """DLA reads two unembedding rows and attn.o a chunk at a time: the same numbers as the
    dequantized model's (which materializes them)."""
    from lminspect.lens.attribution import direct_logit_attribution
    from lminspect.lens.readout import Target

    stored, dense = load_model(kquant_gguf, weights="stored"), load_model(kquant_gguf, weights="float32")
    ids = [5, 80, 81, 32, 101, 7]
    a = direct_logit_attribution(stored, ids, Target(80, "P"), baseline=Target(82, "R"))
    b = direct_logit_attribution(dense, ids, Target(80, "P"), baseline=Target(82, "R"))
    assert all(m.kernel_ready for m in stored.modules() if isinstance(m, StoredLinear))
    assert np.allclose(a.heads, b.heads, rtol=1e-5, atol=1e-6)
    assert np.allclose(a.attn, b.attn, rtol=1e-5, atol=1e-6) and np.allclose(a.mlp, b.mlp, rtol=1e-5, atol=1e-6)
    assert a.logit == pytest.approx(b.logit, rel=1e-5, abs=1e-6)
    assert a.logit == pytest.approx(a.embed + a.attn.sum() + a.mlp.sum() + a.norm_bias, rel=1e-4, abs=1e-4)


def test_activations_memory_flat_in_tokens(tmp_path):
    """Falcon-RW-shaped (ALiBi, tied head) bf16 directory: the statistics of 4x the tokens need
    no more memory (the accumulators are per site, the logits only of the last column)."""
    path = sf.write_falcon_dir(tmp_path / "falcon", sf.falcon_shape(vocab=300, dim=128, layers=2, heads=4, ffn=512,
                                                                      context=256), fill="random")
    code = (
        "import resource, sys; from lminspect.activations import collect;"
        "collect(sys.argv[1], sys.argv[2], tokens=int(sys.argv[3]), seq_len=128, batch_size=2, progress=False);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    peaks = []
    for n in (1000, 4000):
        out = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / f"a{n}"), str(n)],
                             capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        peaks.append(int(out.stdout.split()[-1]) * 1024)
    assert peaks[1] < peaks[0] + 40e6, peaks  # the interpreter's noise, not a per-token cost


def test_repl_open_keeps_weights_stored(kquant_gguf, materialized):
    import lminspect as li

    m = li.open(str(kquant_gguf))
    assert m.generate("Once upon a time", max_new_tokens=3)
    m.lens(PROMPT)
    m.stitch("0,1,1").logits(PROMPT)
    m.attention("Once upon")
    assert m.engine.weights_label.startswith("stored")
    assert materialized == []
    m.engine.layers[1].mlp.down.weight.data.mul_(0.5)  # an edit still works, and costs that one tensor
    assert [n for n, mod in m.engine.named_modules() if isinstance(mod, StoredLinear) and not mod.kernel_ready] == [
        "layers.1.mlp.down"]


@pytest.mark.anyio
@pytest.mark.usefixtures("private_cache")
async def test_tui_stitch_tab_on_stored_weights(kquant_gguf, tmp_path, materialized):
    from test_tui_helpers import opened, press_until, wait_until
    from textual.widgets import Input, Static

    from lminspect.tui.app import LMInspectApp
    from lminspect.tui.widgets.stitch import StitchPane

    tui = LMInspectApp(str(kquant_gguf), runs_dir=tmp_path / "runs", remember=False)
    async with tui.run_test(size=(160, 50)) as pilot:
        await opened(pilot)
        plan = tui.query_one("#plan-input", Input)
        await press_until(pilot, "s", until=lambda: tui.focused is plan, what="the plan field")
        await press_until(pilot, *"0,1,1", until=lambda: plan.value == "0,1,1", what="the plan typed")
        tui.query_one("#max-tokens", Input).value = "4"
        pane = tui.query_one(StitchPane)
        status = tui.query_one("#gen-status", Static)
        await pilot.press("enter")
        await wait_until(pilot, lambda: "first_piece" in pane.timings, what="the first token")
        await wait_until(pilot, lambda: "done" in str(status.render()), what="generation end",
                         detail=lambda: str(status.render()))
    assert materialized.loaded and all(m.weights_label.startswith("stored") for m in materialized.loaded)
    assert materialized == []


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LMINSPECT_SLOW"), reason="slow: set LMINSPECT_SLOW=1")
def test_7b_shaped_lens_dla_attention_in_file_size(tmp_path):
    """A Llama-2-7B-shaped Q4_K_M GGUF (sparse zeros): lens, dla and attention each hold about
    the file plus their buffers (the head and attn.o are never made float32: 2.6 GB at 7B)."""
    path = sf.write_kquant_gguf(tmp_path / "llama7b-q4km.gguf", sf.shape())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "2"}
    runner = ("import resource, runpy, sys; sys.argv = ['lminspect', *sys.argv[1:]]\n"
              "try:\n    runpy.run_module('lminspect', run_name='__main__')\nexcept SystemExit as e:\n"
              "    assert not e.code, e.code\n"
              "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    for argv in (["lens", str(path), PROMPT], ["dla", str(path), PROMPT, "--target", "id:80"],
                 ["attention", str(path), "Once upon a time"]):
        out = subprocess.run([sys.executable, "-c", runner, *argv], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        peak = int(out.stdout.split("MAXRSS")[-1]) * 1024
        assert peak < path.stat().st_size + 1.5e9, (argv[0], peak)


def test_eval_batch_memory_is_checked(kquant_gguf, monkeypatch):
    """A multiple-choice batch whose activations and attention scores would not fit is refused
    with the estimate (the weights' mapped file is not in it)."""
    import lminspect.limits as limits

    monkeypatch.setattr(limits, "available_memory", lambda: 50_000_000)
    r = CliRunner().invoke(app, ["eval", str(kquant_gguf), "--limit", "2", "--batch-size", "2"])
    assert r.exit_code == 2
    assert "a batch of 2 items x" in r.output and "more than the" in r.output, r.output


def test_falcon_rw_fused_qkv_stays_stored(tmp_path):
    """Falcon-RW's per-head interleaved query_key_value: q, k and v read rows of the stored
    matrix (a float32 copy of them was 1.2 GB at Falcon-RW-1B), and compute as the dense model."""
    path = sf.write_falcon_dir(tmp_path / "falcon", sf.falcon_shape(vocab=300, dim=128, layers=2, heads=4, ffn=512,
                                                                      context=256), fill="random")
    stored, dense = load_model(path, weights="stored"), load_model(path, weights="float32")
    assert all(isinstance(getattr(b.attn, n), StoredLinear) for b in stored.layers for n in "qkv")
    ids = torch.tensor([[5, 80, 81, 32, 101, 7]])
    with torch.inference_mode():
        assert torch.equal(stored(ids), dense(ids))
