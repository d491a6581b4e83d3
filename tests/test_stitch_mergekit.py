"""mergekit configs with mergekit's meaning: `stitch export` equals `mergekit-yaml`'s output
tensor for tensor (mergekit is a test-only peer; those tests skip without it), and what
lminspect does not support is named in one line."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from lminspect.cli import app


def _configs(model: str) -> dict[str, dict]:
    src = {"model": model}
    return {
        "plain": {"merge_method": "passthrough", "slices": [
            {"sources": [{**src, "layer_range": [0, 3]}]}, {"sources": [{**src, "layer_range": [1, 4]}]}]},
        "filters_gradient_top": {"merge_method": "passthrough", "dtype": "float32", "parameters": {"scale": 2.0},
                                 "slices": [
            {"sources": [{**src, "layer_range": [0, 2],
                          "parameters": {"scale": [{"filter": "o_proj", "value": 0.5}, {"value": 1.0}]}}]},
            {"sources": [{**src, "layer_range": [1, 4]}], "parameters": {"scale": [1.0, 0.5]}}]},
        "models_only": {"merge_method": "passthrough", "models": [{**src, "parameters": {"scale": 0.7}}]},
        "bf16_then_f16": {"merge_method": "passthrough", "dtype": "bfloat16", "out_dtype": "float16", "slices": [
            {"sources": [{**src, "layer_range": [0, 4]}], "parameters": {"scale": 0.3}}]},
        "source_layer_filter": {"merge_method": "passthrough", "slices": [
            {"sources": [{**src, "layer_range": [2, 4], "parameters": {
                "scale": [{"filter": "layers.2.mlp", "value": 0.25}, {"filter": "*", "value": 1.5}]}}]},
            {"sources": [{**src, "layer_range": [3, 4]}], "parameters": {"scale": [0.1, 0.9]}},  # t = 1
            {"sources": [{**src, "layer_range": [0, 4]}], "parameters": {"scale": {"filter": "norm", "value": 3}}}]},
    }


@pytest.fixture(scope="module")
def mergekit_run():
    pytest.importorskip("mergekit")
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    def run(config: dict, out) -> None:
        run_merge(MergeConfiguration.model_validate(config), str(out),
                  options=MergeOptions(copy_tokenizer=False, lazy_unpickle=False, quiet=True))

    return run


def _assert_same_tensors(a_dir, b_dir) -> int:
    import torch
    from safetensors.torch import load_file

    a, b = load_file(a_dir / "model.safetensors"), load_file(b_dir / "model.safetensors")
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
    return len(a)


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_llama_tied_dir"])
def test_stitch_export_equals_mergekit(mergekit_run, request, fixture, tmp_path):
    model = str(request.getfixturevalue(fixture))
    for name, cfg in _configs(model).items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        mergekit_run(cfg, tmp_path / f"mk_{name}")
        r = CliRunner().invoke(app, ["stitch", "export", model, str(tmp_path / f"li_{name}"), "--plan", str(path)])
        assert r.exit_code == 0, (name, r.output)
        assert _assert_same_tensors(tmp_path / f"mk_{name}", tmp_path / f"li_{name}") > 10, name
        mk_cfg = json.loads((tmp_path / f"mk_{name}" / "config.json").read_text())
        li_cfg = json.loads((tmp_path / f"li_{name}" / "config.json").read_text())
        assert li_cfg["num_hidden_layers"] == mk_cfg["num_hidden_layers"], name


def test_stitch_run_generates_what_the_mergekit_output_generates(mergekit_run, tiny_llama_dir, tmp_path):
    cfg = _configs(str(tiny_llama_dir))["filters_gradient_top"]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    mergekit_run(cfg, tmp_path / "mk")
    import shutil

    shutil.copy(tiny_llama_dir / "tokenizer.json", tmp_path / "mk" / "tokenizer.json")
    args = ["--max-new-tokens", "8", "Once upon"]
    ours = CliRunner().invoke(app, ["stitch", "run", str(tiny_llama_dir), "--plan", str(path), *args])
    ref = CliRunner().invoke(app, ["stitch", "run", str(tmp_path / "mk"), *args])
    assert ours.exit_code == 0 and ref.exit_code == 0, ours.output + ref.output
    assert ours.stdout.splitlines()[0] == ref.stdout.splitlines()[0]


def test_scale_means_every_tensor_and_branch_scales_stay_lminspects(tiny_llama_dir):
    from lminspect.models import load_model
    from lminspect.stitch import parse_plan
    from lminspect.stitch.mergekit import MergekitPlan

    lm = load_model(tiny_llama_dir)
    p = parse_plan({"slices": [{"layer_range": [0, 2], "scale": 0.5, "attn_scale": 0.25}]}, lm.n_layers)
    assert isinstance(p, MergekitPlan) and p.scales_weights
    assert [c.attn_scale for c in p] == [0.25, 0.25] and [c.mlp_scale for c in p] == [1.0, 1.0]
    assert p.tensor_scale("model.layers.1.self_attn.q_proj.weight") == 0.5
    assert p.tensor_scale("model.layers.0.input_layernorm.weight") == 0.5
    assert p.tensor_scale("model.embed_tokens.weight") == 0.5  # the first slice's settings
    with pytest.raises(Exception, match="mergekit's 'scale' multiplies the weights"):
        lm.forward(__import__("torch").tensor([[1, 2]]), plan=p)
    plain = parse_plan({"slices": [{"layer_range": [0, 2]}]}, lm.n_layers)
    assert not plain.scales_weights


def test_unsupported_keys_and_model_mismatch_are_one_line_each(tiny_llama_dir, tmp_path):
    cfg = {"merge_method": "passthrough", "tokenizer_source": "base", "chat_template": "chatml",
           "base_model": "x", "slices": [{"sources": [{"model": "some/other-model", "layer_range": [0, 2]}]}]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(app, ["stitch", "export", str(tiny_llama_dir), str(tmp_path / "o"), "--plan", str(path)])
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.stderr.splitlines() if line.startswith("lminspect: warning:")]
    assert len(warnings) == 4, r.stderr
    for key in ("tokenizer_source", "chat_template", "base_model"):
        assert sum(f"'{key}'" in w for w in warnings) == 1
    assert any("'some/other-model'" in w and str(tiny_llama_dir) in w for w in warnings)
    same = {"slices": [{"sources": [{"model": str(tiny_llama_dir), "layer_range": [0, 2]}]}]}
    path.write_text(yaml.safe_dump(same))
    r = CliRunner().invoke(app, ["stitch", "export", str(tiny_llama_dir), str(tmp_path / "o2"), "--plan", str(path)])
    assert r.exit_code == 0 and "warning" not in r.stderr


@pytest.mark.parametrize("cfg, message", [
    ({"merge_method": "slerp", "slices": [{"layer_range": [0, 2]}]}, "merge_method 'slerp' is not supported"),
    ({"merge_method": "passthrough", "models": [{"model": "a"}, {"model": "b"}]}, "exactly one model"),
    ({"slices": [{"layer_range": [0, 2], "scale": "big"}]}, "scale 'big' is not a number"),
    ({"dtype": "int3", "slices": [{"layer_range": [0, 2]}]}, "dtype 'int3'"),
])
def test_bad_configs_are_one_line(tiny_llama_dir, tmp_path, cfg, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(app, ["stitch", "export", str(tiny_llama_dir), str(tmp_path / "o"), "--plan", str(path)])
    assert r.exit_code == 2, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("lminspect: error:")]
    assert len(errors) == 1 and message in errors[0], r.output
    assert not (tmp_path / "o").exists()


def test_repl_stitch_with_a_mergekit_scale_is_the_exported_model(tiny_llama_dir, tmp_path):
    import numpy as np

    import lminspect as li

    cfg = {"slices": [{"sources": [{"model": str(tiny_llama_dir), "layer_range": [0, 3],
                                    "parameters": {"scale": [{"filter": "mlp", "value": 0.5}, {"value": 1.0}]}}]}]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(app, ["stitch", "export", str(tiny_llama_dir), str(tmp_path / "o"), "--plan", str(path)])
    assert r.exit_code == 0, r.output
    view = li.open(tiny_llama_dir).stitch(str(path))
    assert view.n_layers == 3 and view.plan is None
    np.testing.assert_array_equal(view.logits("Once upon"), li.open(tmp_path / "o").logits("Once upon"))
