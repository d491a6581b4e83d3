"""Exact or refused: every family variant transformers can build either matches transformers'
float32 logits within 1e-4 through ``li.open(dir).logits(ids)``, or is refused with one line.

The oracles are in tests/family_oracles.py (tiny models, norms and biases perturbed)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from family_oracles import VARIANTS, build, hf_logits

from lminspect.errors import UserError

TOL = 1e-4
# Variants that must run (not merely "not wrong"): a refusal here is a regression.
EXACT = {"llama", "llama_tied_odd_head", "llama_bias", "llama_mha", "mistral_nowindow", "gpt2", "falcon_rw",
         "falcon_7b_like", "gemma", "gemma2", "gemma3_text", "phi3", "gpt_neox", "gpt_neox_serial", "stablelm",
         "stablelm_qk_norm"}
# Variants that must be refused whatever else lands.
REFUSED = {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe"}


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    cache: dict = {}

    def get(variant: str):
        if variant not in cache:
            cache[variant] = build(variant, root / variant)
        return cache[variant]
    return get


def _ids(T: int = 20, seed: int = 0):
    import torch

    return torch.randint(1, 300, (1, T), generator=torch.Generator().manual_seed(seed))


def _one_line(e: UserError) -> str:
    msg = str(e.message if hasattr(e, "message") else e)
    assert "\n" not in msg and msg.strip(), msg
    return msg


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_exact_or_refused(variant, family_dirs):
    import lminspect as li

    path = family_dirs(variant)
    ids = _ids()
    try:
        got = li.open(path, weights="float32").logits(ids[0].tolist())
    except UserError as e:
        msg = _one_line(e)
        assert variant not in EXACT, f"{variant} should run: {msg}"
        assert str(path) in msg and "supported families:" in msg, msg
        return
    assert variant not in REFUSED, f"{variant} must be refused"
    ref = hf_logits(path, ids)[0].numpy()
    err = float(np.abs(got - ref).max())
    assert err < TOL, f"{variant}: max |logit difference| {err:.3g} (silently wrong)"


def test_moe_refused_as_moe(family_dirs):
    import lminspect as li

    with pytest.raises(UserError, match=r"mixtral is a mixture-of-experts model, which is not supported \(supported"):
        li.open(family_dirs("mixtral")).logits([1, 2, 3])


def _with_config(src, dst, **changes):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_unknown_model_type_with_llama_names_is_refused(family_dirs, tmp_path):
    from lminspect.models import load_model
    from lminspect.weights import open_store

    d = _with_config(family_dirs("llama"), tmp_path / "m", model_type="bert", architectures=["BertForMaskedLM"])
    assert open_store(d).arch == "unknown"
    with pytest.raises(UserError) as ei:
        load_model(d)
    msg = _one_line(ei.value)
    assert msg.startswith(f"{d}: model_type 'bert' is not supported (supported families: llama"), msg


def test_unknown_key_is_refused(family_dirs, tmp_path):
    from lminspect.models import load_model

    d = _with_config(family_dirs("llama"), tmp_path / "m", attn_logit_softcapping=50.0)
    with pytest.raises(UserError, match=r": llama with attn_logit_softcapping=50.0 is not supported \(supported fam"):
        load_model(d)
    d2 = _with_config(family_dirs("llama"), tmp_path / "m2", attn_logit_softcapping=None, some_flag=False)
    load_model(d2)  # unset keys change nothing


def test_cli_refusal_is_one_line_exit_2(family_dirs, tmp_path):
    import subprocess
    import sys

    d = _with_config(family_dirs("llama"), tmp_path / "m", model_type="mamba")
    r = subprocess.run([sys.executable, "-m", "lminspect", "generate", str(d), "hi", "-n", "2"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert lines == [f"lminspect: error: {d}: model_type 'mamba' is not supported (supported families: "
                     + lines[0].split("supported families: ", 1)[1]], r.stderr


def test_family_detection_reads_config_only():
    from lminspect.weights.families import check_family, family_of
    from lminspect.weights.naming import detect_arch

    assert family_of({"model_type": "mistral"}).engine == "llama"
    assert family_of({"architectures": ["LlamaForCausalLM"]}).name == "llama"
    assert family_of({"lminspect_arch": "gpt2", "model_type": "llama"}).name == "gpt2"
    assert detect_arch({"model_type": "bert"}, ["model.layers.0.self_attn.q_proj.weight"]) == "unknown"
    assert detect_arch({}, ["model.layers.0.self_attn.q_proj.weight"]) == "llama"  # browsing only
    with pytest.raises(UserError, match="names no model_type"):
        check_family({"hidden_size": 8}, "x")


def test_gguf_unsupported_architecture_refused(tmp_path):
    """A GGUF whose general.architecture lminspect does not run: one line at load."""
    import gguf

    from lminspect.models import load_model

    path = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(path), "mamba")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UserError) as ei:
        load_model(path)
    assert "model_type 'mamba' is not supported (supported families:" in _one_line(ei.value)
