"""Lens instruments on stitched plans (identities that must hold), head scaling in the engine,
``forward_from``, the REPL methods and the ``lens`` / ``dla`` / ``patch`` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import lminspect as li
from lminspect.cli import app
from lminspect.lens import Metric, Target, activation_patching, direct_logit_attribution, logit_lens
from lminspect.models import LayerCall, load_model
from lminspect.models.layercall import full_plan

runner = CliRunner()
CLEAN = [5, 17, 42, 99, 7, 123, 64, 200, 11, 31]
CORRUPT = [5, 17, 42, 98, 7, 124, 64, 200, 11, 31]
METRIC = Metric("logit_diff", Target(42, "a"), Target(7, "b"))


@pytest.fixture(scope="module")
def lm(tiny_llama_dir):
    return load_model(str(tiny_llama_dir))


def _logits(lm, plan):
    with torch.inference_mode():
        return lm(torch.tensor([CLEAN]), plan=plan)[0]


def test_repeat_with_scale_zero_equals_plan_without_it(lm):
    plain = full_plan(4)
    rep = [LayerCall(0), LayerCall(1), LayerCall(1, 0.0, 0.0), LayerCall(2), LayerCall(3)]
    torch.testing.assert_close(_logits(lm, rep), _logits(lm, plain), rtol=0, atol=1e-5)
    a, b = logit_lens(lm, CLEAN, rep, target=Target(42, "t")), logit_lens(lm, CLEAN, plain, target=Target(42, "t"))
    keep = [0, 1, 2, 4, 5]  # rows: embed, 0, 1, (1 again, scale 0), 2, 3
    np.testing.assert_allclose(a.target_prob[keep], b.target_prob, atol=1e-6)
    np.testing.assert_allclose(a.target_prob[3], a.target_prob[2], atol=1e-7)
    assert a.labels == ["embed", "0", "1", "1#2~", "2", "3"]
    da = direct_logit_attribution(lm, CLEAN, Target(42, "t"), rep)
    db = direct_logit_attribution(lm, CLEAN, Target(42, "t"), plain)
    assert da.logit == pytest.approx(db.logit, abs=1e-5)
    assert da.attn[2] == 0 and da.mlp[2] == 0 and not da.heads[2].any()
    pa = activation_patching(lm, CLEAN, CORRUPT, METRIC, rep, site="resid")
    pb = activation_patching(lm, CLEAN, CORRUPT, METRIC, plain, site="resid")
    np.testing.assert_allclose(pa.values[[0, 1, 3, 4]], pb.values, atol=1e-5)


def test_all_heads_ablated_equals_attn_zero(lm):
    n_head = lm.layers[1].attn.n_head
    heads = tuple((h, 0.0) for h in range(n_head))
    zero = [LayerCall(0), LayerCall(1, attn_scale=0.0), LayerCall(2), LayerCall(3)]
    ablated = [LayerCall(0), LayerCall(1, heads=heads), LayerCall(2), LayerCall(3)]
    torch.testing.assert_close(_logits(lm, ablated), _logits(lm, zero), rtol=0, atol=1e-6)
    assert not torch.allclose(_logits(lm, ablated), _logits(lm, full_plan(4)), atol=1e-4)


def test_kv_group_scales_the_query_heads_that_share_it(lm):
    att = lm.layers[2].attn
    rep = att.n_head // att.n_kv_head  # tiny llama: 4 heads, 2 KV heads
    assert rep == 2
    by_kv = [LayerCall(0), LayerCall(1), LayerCall(2, kv_heads=((1, 0.5),)), LayerCall(3)]
    by_q = [LayerCall(0), LayerCall(1), LayerCall(2, heads=((2, 0.5), (3, 0.5))), LayerCall(3)]
    torch.testing.assert_close(_logits(lm, by_kv), _logits(lm, by_q), rtol=0, atol=1e-6)


def test_head_scale_matches_hf_o_proj_hook(lm, tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    hd = lm.layers[1].attn.head_dim

    def pre(m, args):
        h = args[0].clone()
        h[..., 3 * hd:4 * hd] *= 0.25
        return (h,)

    handle = hf.model.layers[1].self_attn.o_proj.register_forward_pre_hook(pre)
    with torch.no_grad():
        want = hf(torch.tensor([CLEAN])).logits[0]
    handle.remove()
    plan = [LayerCall(0), LayerCall(1, heads=((3, 0.25),)), LayerCall(2), LayerCall(3)]
    torch.testing.assert_close(_logits(lm, plan), want, rtol=0, atol=1e-4)


def test_bad_head_index_is_a_user_error(lm):
    from lminspect.errors import UserError

    with pytest.raises(UserError, match="heads\\[9\\] is out of range"):
        _logits(lm, [LayerCall(0, heads=((9, 0.0),))])
    with pytest.raises(UserError, match="kv\\[2\\] is out of range"):
        lm.new_cache([LayerCall(0, kv_heads=((2, 0.0),))])


def test_forward_from_continues_a_forward(lm):
    ids = torch.tensor([CLEAN])
    with torch.inference_mode():
        full, acts = lm.run_with_cache(ids, ["resid_in.2"])
        torch.testing.assert_close(lm.forward_from(2, acts["resid_in.2"]), full, rtol=0, atol=1e-6)
        cache = lm.new_cache()
        lm(ids[:, :4], cache=cache)
        out = lm.forward_from(2, acts["resid_in.2"][:, 4:], cache=cache, last_only=True)
    torch.testing.assert_close(out[0, -1], full[0, -1], rtol=0, atol=1e-5)


def test_patching_identities(lm):
    from lminspect.errors import UserError

    with pytest.raises(UserError, match="nothing to patch"):
        activation_patching(lm, CLEAN, CLEAN, METRIC)
    for site in ("resid", "attn", "mlp", "head"):
        res = activation_patching(lm, CLEAN, CORRUPT, METRIC, site=site, batch_size=4)
        assert res.recovered.shape == (4, 4 if site == "head" else len(CLEAN))
    # prompts that differ only in the last token: that token's residual is all the later layers
    # see that differs, so patching it at any plan position recovers everything, elsewhere nothing
    res = activation_patching(lm, CLEAN, CLEAN[:-1] + [32], METRIC, site="resid")
    np.testing.assert_allclose(res.recovered[:, -1], 1.0, atol=1e-4)
    assert not res.recovered[:, :-1].any() and res.shared_prefix == len(CLEAN) - 1


def test_repl_methods(tiny_llama_dir):
    m = li.open(str(tiny_llama_dir))
    r = m.lens("Once upon a time", target="id:42", k=3)
    assert r.top_probs.shape == (5, 3) and "logit lens" in repr(r) and len(r.target_rank) == 5
    s = m.stitch("0,1,1,3").lens("Once upon a time", target="id:42")
    assert s.labels == ["embed", "0", "1", "1#2", "3"] and s.plan == "0-1,1,3"
    d = m.dla("Once upon a time", target="id:42", baseline="id:7")
    assert d.heads.shape == (4, 4) and d.total == pytest.approx(d.logit, abs=1e-4)
    p = m.patch("Once upon a time there is", "Once upon a day there was", "logit_diff: id:42,id:7", site="mlp")
    assert p.recovered.shape[0] == 4 and "patching mlp" in repr(p)
    assert p.to_dict()["cols"][0] == p.cols[0]


def _invoke(*args):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def test_cli_lens_dla_patch(tiny_llama_dir, tmp_path):
    d = str(tiny_llama_dir)
    r = _invoke("lens", d, "Once upon a time", "--target", "id:42", "--compare", "0,1,1*0,2,3",
                "--out", str(tmp_path / "lens.json"))
    assert r.exit_code == 0, r.output
    assert "logit lens: plan all" in r.output and "1#2~" in r.output and "probability of" in r.output
    saved = json.loads((tmp_path / "lens.json").read_text())
    assert set(saved["results"]) == {"all", "0-1,1*0,2-3"}
    r = _invoke("dla", d, "Once upon a time", "--target", "id:42", "--baseline", "id:7")
    assert r.exit_code == 0, r.output
    assert "direct logit attribution" in r.output and "per head" in r.output
    out = tmp_path / "grid.csv"
    args = ["patch", d, "--clean", "Once upon a time there is", "--corrupt", "Once upon a day there was",
            "--metric", "logit_diff: id:42,id:7", "--site", "attn", "--out", str(out)]
    r = _invoke(*args)
    assert r.exit_code == 0, r.output
    assert "recovered fraction" in r.output and "most recovered" in r.output
    rows = out.read_text().splitlines()
    assert rows[0].startswith("plan_pos,") and len(rows) == 5
    r = _invoke(*args)
    assert r.exit_code == 2 and "exists" in r.output
    r = _invoke(*args, "--overwrite")
    assert r.exit_code == 0
    r = _invoke(*args[:-2], "--out", str(tmp_path / "g.npz"))
    assert r.exit_code == 0 and np.load(tmp_path / "g.npz")["recovered"].shape[0] == 4


@pytest.mark.parametrize("args, needle", [
    (("patch", "{d}", "--clean", "Once", "--corrupt", "Once upon", "--metric", "logit: id:1"), "same number of tokens"),
    (("patch", "{d}", "--clean", "Once", "--corrupt", "Upon", "--metric", "diff: a,b"), "bad metric"),
    (("patch", "{d}", "--clean", "Once", "--corrupt", "Upon", "--metric", "logit: id:1", "--site", "x"), "--site"),
    (("lens", "{d}", "Once", "--target", "id:999"), "out of range"),
    (("lens", "{d}", "", "--target", "id:9"), "empty prompt"),
    (("lens", "{d}", "Once", "--plan", "0,9"), "layer 9 is out of range"),
    (("dla", "{d}", "Once", "--target", "id:1", "--out", "x.txt"), "expected a file ending"),
    (("lens", "{d}", "Once", "--plan", "0,1*heads[7]=0"), "heads[7] is out of range"),
])
def test_cli_errors_are_one_line(tiny_llama_dir, args, needle):
    r = _invoke(*(a.replace("{d}", str(tiny_llama_dir)) for a in args))
    assert r.exit_code == 2, r.output
    out = r.output.strip()
    assert needle in out and out.count("\n") == 0 and "Traceback" not in out


def test_cli_lens_and_patch_save_their_figures(tiny_llama_dir, tmp_path):
    pytest.importorskip("matplotlib")
    d = str(tiny_llama_dir)
    lens_svg = tmp_path / "lens.svg"
    r = _invoke("lens", d, "Once upon a time", "--target", "id:42", "--compare", "0,1,3", "--save", str(lens_svg))
    assert r.exit_code == 0, r.output
    assert "<svg" in lens_svg.read_text() and f"saved {lens_svg}" in r.output
    r = _invoke("lens", d, "Once upon a time", "--target", "id:42", "--save", str(lens_svg))
    assert r.exit_code == 2 and "exists" in r.output  # never replaced without --overwrite
    r = _invoke("lens", d, "Once upon a time", "--save", str(tmp_path / "l2.png"))
    assert r.exit_code == 2 and "--target" in r.output and not (tmp_path / "l2.png").exists()
    grid = tmp_path / "patch.png"
    r = _invoke("patch", d, "--clean", "Once upon a time there is", "--corrupt", "Once upon a day there was",
                "--metric", "logit_diff: id:42,id:7", "--save", str(grid))
    assert r.exit_code == 0, r.output
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = _invoke("patch", d, "--clean", "Once", "--corrupt", "Upon", "--metric", "logit: id:1", "--save",
                str(tmp_path / "p.jpg"))
    assert r.exit_code == 2 and ".png or .svg" in r.output
