"""The layer-plan grammar, mergekit slices, plan files, presets, and round-trips."""

from __future__ import annotations

import json

import pytest

from lminspect.errors import UserError
from lminspect.models.layercall import LayerCall, full_plan
from lminspect.stitch import (
    PRESETS,
    describe_plan,
    load_plans,
    parse_plan,
    plan_to_string,
    preset_spec,
)


def idx(plan):
    return [c.index for c in plan]


def test_inclusive_ranges_and_singles():
    assert idx(parse_plan("0-23,27-29", 32)) == list(range(24)) + [27, 28, 29]
    assert idx(parse_plan("7", 32)) == [7]
    assert idx(parse_plan("5-2", 8)) == [5, 4, 3, 2]
    assert len(parse_plan("0-23", 32)) == 24


def test_repeats_and_keywords():
    assert idx(parse_plan("15r3", 32)) == [15, 15, 15]
    assert idx(parse_plan("14-19r2", 32)) == list(range(14, 20)) * 2
    assert idx(parse_plan("all", 4)) == [0, 1, 2, 3]
    assert idx(parse_plan("even", 5)) == [0, 2, 4]
    assert idx(parse_plan("odd", 5)) == [1, 3]
    assert parse_plan(None, 3) == full_plan(3)
    assert parse_plan("", 3) == full_plan(3)


def test_skips_drop_from_all():
    assert idx(parse_plan("-27-29", 32)) == [i for i in range(32) if i not in (27, 28, 29)]
    assert idx(parse_plan("skip:27-29", 32)) == idx(parse_plan("-27-29", 32))
    assert idx(parse_plan("skip:15", 32)) == [i for i in range(32) if i != 15]
    assert idx(parse_plan("even,skip:4", 8)) == [0, 2, 6]


def test_underscore_separates_like_seed_names():
    assert idx(parse_plan("0-23_27-31", 32)) == list(range(24)) + list(range(27, 32))
    assert idx(parse_plan("15r3_23r3_31r3", 32)) == [15] * 3 + [23] * 3 + [31] * 3


def test_scales():
    p = parse_plan("15r3*0.5", 32)
    assert p == [LayerCall(15, 0.5, 0.5)] * 3
    p = parse_plan("14-19*0.8", 32)
    assert all(c.attn_scale == 0.8 and c.mlp_scale == 0.8 for c in p) and len(p) == 6
    assert parse_plan("3*attn=0.5", 8) == [LayerCall(3, 0.5, 1.0)]
    assert parse_plan("3*mlp=0.5", 8) == [LayerCall(3, 1.0, 0.5)]
    assert parse_plan("3*attn=0.5*mlp=2", 8) == [LayerCall(3, 0.5, 2.0)]


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("0-3,x7", "bad plan item 'x7' at column 5"),
        ("0-23, 27-29, x7", "at column 14"),
        ("3*foo", "bad scale"),
        ("0-40", "the model has 32 layers"),
        ("skip:0-31", "leaves no layers"),
        ("1r0", "repeat count"),
    ],
)
def test_errors_name_item_and_column(spec, needle):
    with pytest.raises(UserError) as ei:
        parse_plan(spec, 32)
    assert needle in ei.value.message


def test_out_of_range_names_depth():
    with pytest.raises(UserError, match=r"layer 31 is out of range; the model has 30 layers \(0-29\)"):
        parse_plan("31", 30)


@pytest.mark.parametrize(
    "spec",
    ["all", "0-23,27-29", "15r3*0.5", "14-19r2", "0r2,1-14,31r2", "3*attn=0.5*mlp=2", "5-2", "1,1,2,3,3", "odd"],
)
def test_round_trip(spec):
    p = parse_plan(spec, 32)
    assert parse_plan(plan_to_string(p), 32) == p
    assert parse_plan(plan_to_string(p, 32), 32) == p


def test_plan_to_string_compact():
    assert plan_to_string(parse_plan("all", 8), 8) == "all"
    assert plan_to_string(parse_plan("15r3", 32)) == "15r3"
    assert plan_to_string(parse_plan("14-19r2", 32)) == "14-19r2"
    assert plan_to_string(parse_plan("0-23,27-29", 32)) == "0-23,27-29"


def test_mergekit_slices_half_open():
    cfg = {
        "slices": [
            {"sources": [{"model": "m", "layer_range": [0, 24]}]},
            {"sources": [{"model": "m", "layer_range": [27, 30]}]},
        ],
        "merge_method": "passthrough",
    }
    assert idx(parse_plan(cfg, 32)) == list(range(24)) + [27, 28, 29]
    short = {"slices": [{"layer_range": [0, 2], "attn_scale": 0.5, "mlp_scale": 0.5}, {"layer_range": [3, 4]}]}
    assert parse_plan(short, 4) == [LayerCall(0, 0.5, 0.5), LayerCall(1, 0.5, 0.5), LayerCall(3)]
    # mergekit's scale multiplies the weights: the branch scales stay 1
    weights = parse_plan({"slices": [{"layer_range": [0, 2], "scale": 0.5}]}, 4)
    assert weights == [LayerCall(0), LayerCall(1)] and weights.tensor_scale("model.layers.1.mlp.up_proj.weight") == 0.5


def test_mergekit_errors():
    with pytest.raises(UserError, match="out of range"):
        parse_plan({"slices": [{"layer_range": [0, 33]}]}, 32)
    with pytest.raises(UserError, match="different models"):
        parse_plan(
            {"slices": [{"sources": [{"model": "a", "layer_range": [0, 1]}]},
                        {"sources": [{"model": "b", "layer_range": [1, 2]}]}]},
            4,
        )
    with pytest.raises(UserError, match="passthrough"):
        parse_plan({"slices": [{"sources": [{"layer_range": [0, 1]}, {"layer_range": [0, 1]}]}]}, 4)


def test_plan_files(tmp_path):
    y = tmp_path / "p.yaml"
    y.write_text("slices:\n  - sources:\n      - model: x\n        layer_range: [0, 2]\n  - layer_range: [3, 4]\n")
    assert idx(parse_plan(str(y), 4)) == [0, 1, 3]
    j = tmp_path / "p.json"
    j.write_text(json.dumps({"plan": "0-1,3r2"}))
    assert idx(parse_plan(str(j), 4)) == [0, 1, 3, 3]
    t = tmp_path / "p.toml"
    t.write_text('[[slices]]\nlayer_range = [1, 3]\nattn_scale = 0.5\nmlp_scale = 0.5\n')
    assert parse_plan(str(t), 4) == [LayerCall(1, 0.5, 0.5), LayerCall(2, 0.5, 0.5)]
    bad = tmp_path / "bad.yaml"
    bad.write_text("slices: [\n")
    with pytest.raises(UserError, match="cannot parse plan file"):
        parse_plan(str(bad), 4)
    with pytest.raises(UserError, match="not found"):
        parse_plan(str(tmp_path / "missing.toml"), 4)


def test_load_plans_for_sweep(tmp_path):
    t = tmp_path / "plans.toml"
    t.write_text('[plans]\nbase = "all"\nlate = "0-1,3"\n[plans.mk]\nslices = [{layer_range = [0, 2]}]\n')
    plans = load_plans(str(t), 4)
    assert list(plans) == ["base", "late", "mk"]
    assert idx(plans["mk"]) == [0, 1]
    assert list(load_plans("presets", 32)) == list(PRESETS)
    assert list(load_plans("baseline,15_single_skip", 32)) == ["baseline", "15_single_skip"]
    with pytest.raises(UserError, match="unknown preset"):
        load_plans("nope", 32)
    t.write_text('[plans]\nbad = "0-9"\n')
    with pytest.raises(UserError, match="plan 'bad'"):
        load_plans(str(t), 4)


def test_presets_match_seed_on_32_layers():
    assert idx(parse_plan("0-23_27-31", 32)) == [i for i in range(32) if i not in (24, 25, 26)]
    assert idx(parse_plan("15_single_skip", 32)) == [i for i in range(32) if i != 15]
    assert idx(parse_plan("skip_near_end_keep_last_two", 32)) == [i for i in range(32) if i not in (27, 28, 29)]
    mid = idx(parse_plan("mid_expansion_with_repeats", 32))
    assert not {6, 7, 8, 9, 25, 26, 27, 28} & set(mid) and mid.count(14) == 2 and mid.count(19) == 2
    assert idx(parse_plan("2_3rd_of_llama", 32)) == [i for i in range(32) if not 11 <= i <= 20]
    assert idx(parse_plan("2_3rds_plus_llama", 32)) == [i for i in range(32) if not (11 <= i <= 20 and i % 2)]
    assert idx(parse_plan("15r3_23r3_31r3", 32)) == [15] * 3 + [23] * 3 + [31] * 3


@pytest.mark.parametrize("n", [4, 12, 24, 30, 32, 40])
def test_presets_scale_to_any_depth(n):
    for name in PRESETS:
        plan = parse_plan(name, n)  # never raises, never empty
        assert plan and all(0 <= c.index < n for c in plan), name
    # on 30 layers: the late skip stays late and keeps the last two layers
    p = idx(parse_plan("skip_near_end_keep_last_two", 30))
    assert p[-2:] == [28, 29] and len(p) < 30


def test_preset_spec_scaling_30():
    assert preset_spec("baseline", 30) == "all"
    assert preset_spec("15_single_skip", 30) == "skip:14"
    assert preset_spec("15r3_23r3_31r3", 30).endswith("29r3")
    odd = idx(parse_plan("2_3rds_plus_llama", 30))
    assert len(odd) < 30


def test_describe_plan():
    s = describe_plan(parse_plan("0-1,1,3", 4), 4)
    assert s.calls == 4 and s.unique == 3 and s.skipped == [2] and s.repeated == {1: 2}
    assert s.params_touched == 0.75 and s.compute == 1.0
    assert s.text == "0-1,1,3"
