"""Exact or refused: every family variant transformers can build either matches transformers'
float32 logits within 1e-4 through ``li.open(dir).logits(ids)``, or is refused with one line.

The oracles are in tests/family_oracles.py (tiny models, norms and biases perturbed)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from family_oracles import VARIANTS, add_gguf_sizes, build, hf_logits

from lminspect.errors import UserError

TOL = 1e-4
# Variants that must run (not merely "not wrong"): a refusal here is a regression.
EXACT = {"llama", "llama_tied_odd_head", "llama_bias", "llama_mha", "llama_rope_llama3", "llama_rope_linear",
         "llama_rope_dynamic", "llama_rope_yarn", "qwen2", "qwen2_tied", "qwen2_sliding", "qwen3",
         "qwen3_bias_odd_head", "qwen2_yarn", "qwen3_sliding", "smollm3_window", "granite_tied_bias",
         "falcon_mq_serial", "falcon_alibi_parallel", "mistral_nowindow", "llama_gelu_mqa", "mistral_window_1_tied",
         "olmo2_bias_tied_mha", "gpt2_relu_inner", "mistral_window", "granite", "smollm3", "smollm3_layers",
         "olmo2", "gpt2", "falcon_rw", "falcon_7b_like", "gemma", "gemma2", "gemma3_text", "phi3", "gpt_neox",
         "gpt_neox_serial", "stablelm", "stablelm_qk_norm"}
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
    assert f"{path}: GGUF architecture 'mamba' is not supported (supported families:" in _one_line(ei.value)


# ---------------------------------------------------------------- the Llama engine's families in depth

LLAMA_ENGINE = sorted({"llama_rope_llama3", "llama_rope_yarn", "llama_rope_linear", "qwen2", "qwen2_sliding",
                       "qwen3", "qwen3_bias_odd_head", "mistral_window", "granite", "smollm3", "smollm3_layers",
                       "olmo2", "olmo2_bias_tied_mha", "mistral_window_1_tied", "qwen2_yarn", "qwen3_sliding", "smollm3_window", "granite_tied_bias"})


@pytest.mark.parametrize("variant", LLAMA_ENGINE)
def test_decode_and_padded_batch(variant, family_dirs):
    """KV-cache decode one token at a time (windows shorter than the prompt) and a left-padded batch."""
    import torch

    from lminspect.models import load_model

    path = family_dirs(variant)
    model = load_model(path)
    ids = _ids(20, seed=1)
    ref = hf_logits(path, ids)[0]
    cache = model.new_cache()
    with torch.no_grad():
        out = [model(ids[:, :7], cache=cache)[0]]
        for t in range(7, 20):
            out.append(model(ids[:, t:t + 1], cache=cache)[0])
    got = torch.cat(out)
    assert float((got - ref).abs().max()) < TOL, variant
    short = ids[:, 6:]
    ref_short = hf_logits(path, short)[0]
    batch = torch.cat([ids, torch.cat([torch.zeros(1, 6, dtype=torch.long), short], 1)])
    with torch.no_grad():
        got = model(batch, pad=torch.tensor([0, 6]))
    assert float((got[0] - ref).abs().max()) < TOL
    assert float((got[1, 6:] - ref_short).abs().max()) < TOL


@pytest.mark.parametrize("variant", LLAMA_ENGINE)
def test_stitch_export_loads_in_transformers(variant, family_dirs, tmp_path):
    """A plan that repeats a layer, exported: transformers gives the engine's logits for that plan."""
    import torch

    from lminspect.models import LayerCall, load_model
    from lminspect.stitch import export_stitched

    path = family_dirs(variant)
    model = load_model(path)
    plan = [LayerCall(0), LayerCall(1), LayerCall(1)]
    out = export_stitched(model, "0,1,1", tmp_path / "x")
    ids = _ids(16, seed=2)
    with torch.no_grad():
        ours = model(ids, plan=plan)[0]
    ref = hf_logits(out, ids)[0]
    assert float((ours - ref).abs().max()) < TOL, variant
    assert json.loads((out / "config.json").read_text())["model_type"] == json.loads(
        (path / "config.json").read_text())["model_type"]


@pytest.mark.parametrize("variant", ["granite", "olmo2", "qwen3", "smollm3"])
def test_dla_rows_sum_to_the_logit(variant, family_dirs):
    """Direct logit attribution under each family's final scaling and post-norms: rows and heads add up."""
    from lminspect.lens.attribution import direct_logit_attribution
    from lminspect.lens.readout import Target
    from lminspect.models import load_model

    model = load_model(family_dirs(variant))
    ids = _ids(10, seed=3)[0].tolist()
    res = direct_logit_attribution(model, ids, Target(id=5, text="x"))
    total = res.embed + float(res.attn.sum() + res.mlp.sum()) + res.norm_bias
    assert abs(total - res.logit) < 1e-3 * max(1.0, abs(res.logit)), (total, res.logit)
    np.testing.assert_allclose(res.heads.sum(1) + res.attn_bias, res.attn, atol=1e-4)


@pytest.mark.parametrize("variant", ["qwen3", "olmo2", "granite"])
def test_hooks_and_head_ablation(variant, family_dirs):
    """Hook sites see the branch outputs that are added; zeroing every head equals no attention."""
    import torch

    from lminspect.models import LayerCall, load_model

    model = load_model(family_dirs(variant))
    ids = _ids(8)
    logits, acts = model.run_with_cache(ids, ["resid_in.0", "attn_out.0", "mlp_out.0", "resid_out.0"])
    np.testing.assert_allclose(acts["resid_out.0"], acts["resid_in.0"] + acts["attn_out.0"] + acts["mlp_out.0"],
                               atol=1e-5)
    plan = [LayerCall(0, heads=tuple((h, 0.0) for h in range(4))), LayerCall(1)]
    with torch.no_grad():
        a = model(ids, plan=plan)
        b = model(ids, plan=[LayerCall(0, attn_scale=0.0), LayerCall(1)])
    if variant != "olmo2":  # OLMo 2's post-norm of a zero branch is zero too, but o's bias is absent either way
        assert float((a - b).abs().max()) < 1e-5


# ---------------------------------------------------------------- GGUF of the same families


def _write_family_gguf(src_dir, path, arch: str, **extra_kv):
    """A GGUF as llama.cpp's converter lays it out for ``arch`` (its tensor names from gguf.constants;
    qwen2 / qwen3 / olmo2 keep q/k unpermuted, as its Qwen2Model / Olmo2Model do)."""
    import gguf

    from lminspect.weights import open_store
    from lminspect.weights.families import gguf_family

    src, spec = open_store(src_dir), gguf_family(arch)
    cfg = src.config
    w = gguf.GGUFWriter(str(path), arch)
    add_gguf_sizes(w, cfg)
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    w.add_rope_dimension_count(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
    for k, v in extra_kv.items():
        w.add_float32(f"{arch}.{k}", v) if isinstance(v, float) else w.add_uint32(f"{arch}.{k}", v)
    known = set(gguf.constants.TENSOR_NAMES.values())
    for c in src.canonical_names():
        name = spec.gguf_names.to_hf(c)
        base = name.rsplit(".", 1)[0]
        assert (base.replace(f"blk.{c.split('.')[1]}.", "blk.{bid}.") if c.startswith("layers.") else base) in known
        w.add_tensor(name, np.ascontiguousarray(src.get_canonical(c)))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("variant, arch", [("qwen2", "qwen2"), ("qwen3", "qwen3"), ("olmo2", "olmo2")])
def test_gguf_of_family_matches_hf(variant, arch, family_dirs, tmp_path):
    import torch

    from lminspect.models import load_model

    src = family_dirs(variant)
    path = _write_family_gguf(src, tmp_path / f"{variant}.gguf", arch)
    model = load_model(path)
    ids = _ids(12)
    with torch.no_grad():
        got = model(ids)[0]
    assert float((got - hf_logits(src, ids)[0]).abs().max()) < TOL


def test_gguf_settings_without_engine_math_are_refused(family_dirs, tmp_path):
    """Experts, or a rope-frequency table, in a llama GGUF: refused, not run as plain Llama."""
    from lminspect.models import load_model

    path = _write_family_gguf(family_dirs("qwen2"), tmp_path / "moe.gguf", "qwen2", expert_count=4)
    with pytest.raises(UserError, match=r"qwen2 with num_local_experts=4 is not supported"):
        load_model(path)


@pytest.mark.parametrize("variant", ["mistral_window", "qwen2_sliding"])
def test_window_in_token_trees(variant, family_dirs):
    """The token-tree path (evals.mc_batch): two endings on a context longer than the window,
    each scored as its own plain sequence."""
    import torch

    from lminspect.models import LayerCall, load_model

    model = load_model(family_dirs(variant))
    ctx, e1, e2 = _ids(9, seed=4), _ids(3, seed=5), _ids(4, seed=6)
    ids = torch.cat([ctx, e1, e2], 1)
    n, a, b = 9, 3, 4
    positions = torch.cat([torch.arange(n + a), torch.arange(n, n + b)])[None]
    allowed = torch.zeros(n + a + b, n + a + b, dtype=torch.bool)
    allowed[: n + a, : n + a] = torch.ones(n + a, n + a, dtype=torch.bool).tril()
    allowed[n + a:, :n] = True
    allowed[n + a:, n + a:] = torch.ones(b, b, dtype=torch.bool).tril()
    with torch.no_grad():
        x, run = model.prepare_tree(ids, positions, allowed[None], causal_head=n)
        for i in range(model.n_layers):
            x = model.layers[i](x, run, i, LayerCall(i))
        tree = model.logits(x)[0]
        one = model(torch.cat([ctx, e1], 1))[0]
        two = model(torch.cat([ctx, e2], 1))[0]
    assert float((tree[: n + a] - one).abs().max()) < TOL
    assert float((tree[n + a:] - two[n:]).abs().max()) < TOL


@pytest.mark.skipif(__import__("family_oracles").llama_cpp_dir() is None,
                    reason="set LMINSPECT_LLAMA_CPP to a llama.cpp source tree")
@pytest.mark.parametrize("variant, verdict", [
    ("llama", "exact"), ("llama_tied_odd_head", "exact"), ("llama_rope_llama3", "exact"), ("qwen2", "exact"),
    ("qwen2_tied", "exact"), ("qwen3", "exact"), ("olmo2", "exact"), ("granite", "exact"),
    ("smollm3", "refused"), ("mixtral", "refused"), ("stablelm", "exact"), ("phi3", "exact"),
])
def test_llama_cpp_converted_gguf(variant, verdict, family_dirs, tmp_path):
    """GGUF files written by llama.cpp's own convert_hf_to_gguf.py: the HF model's logits, or one line."""
    import torch
    from family_oracles import convert_with_llama_cpp

    from lminspect.models import load_model

    src = family_dirs(variant)
    path = convert_with_llama_cpp(src, tmp_path / f"{variant}.gguf")
    if verdict == "refused":
        with pytest.raises(UserError) as ei:
            load_model(path)
        assert "supported families:" in _one_line(ei.value)
        return
    ids = _ids(20)
    with torch.no_grad():
        got = load_model(path)(ids)[0]
    assert float((got - hf_logits(src, ids)[0]).abs().max()) < TOL
