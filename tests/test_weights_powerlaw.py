"""weightwatcher's power-law alpha: lminspect's fit against weightwatcher itself (a test-only
peer; these tests skip when it is not installed)."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from lminspect.weights.powerlaw import powerlaw_fit


def test_powerlaw_fit_recovers_pareto():
    rng = np.random.default_rng(2)
    ev = rng.pareto(2.0, 3000) + 1.0  # density exponent 3
    r = powerlaw_fit(ev)
    assert r["alpha"] == pytest.approx(3.0, abs=0.25)
    assert r["alpha_tail"] == int((ev >= r["alpha_xmin"]).sum()) and 0 < r["alpha_D"] < 1
    assert r["alpha_warning"] == ""


def test_powerlaw_fit_too_few_eigenvalues():
    assert powerlaw_fit(np.array([1.0])) == {}
    assert powerlaw_fit(np.array([1e-7, 1e-6, 2.0])) == {}  # under weightwatcher's 1e-5 threshold


def _spectra() -> list[np.ndarray]:
    """Marchenko-Pastur bulks with and without a few spikes (short winning tails), heavy tails,
    and small spectra (weightwatcher's small-N fit below 20 eigenvalues)."""
    rng = np.random.default_rng(0)
    out = []
    for n, m in ((64, 200), (17, 40), (12, 30), (300, 300), (9, 50), (5, 30)):
        w = rng.standard_normal((m, n)) / np.sqrt(m)
        out.append(np.linalg.svd(w, compute_uv=False) ** 2)
        spiked = out[-1].copy()
        spiked[: min(5, n // 3)] *= 40.0
        out.append(spiked)
    out.append(rng.pareto(1.5, 500) + 1.0)
    out.append(rng.pareto(4.0, 40) * 1e-3 + 1e-6)
    return out


def test_powerlaw_fit_equals_weightwatcher_fit():
    wwp = pytest.importorskip("weightwatcher.WW_powerlaw")
    short_tail = False
    for ev in _spectra():
        x = ev[ev > 1e-5]
        ref = wwp.WWFit(x)
        r = powerlaw_fit(ev)
        assert r["alpha"] == ref.alpha and r["alpha_D"] == ref.D and r["alpha_xmin"] == ref.xmin
        assert r["alpha_sigma"] == pytest.approx(ref.sigma, rel=1e-12)
        assert r["alpha_tail"] == len(ev[ev >= ref.xmin])
        short_tail |= r["alpha_tail"] < 11  # the tails powerlaw_alpha(min_tail=10) never tried
    assert short_tail


def _hf_ww_details(model) -> dict[str, dict]:
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    df = ww.WeightWatcher(model=model).analyze()
    return {row["longname"]: row for row in df.to_dict("records")}


def _compare_with_ww(store, details: dict[str, dict], tol: float) -> int:
    compared = 0
    for longname, row in details.items():
        name = longname + ".weight"
        if name not in store.keys():  # a tied lm_head
            continue
        r = store.stats(name)
        assert r["alpha"] == pytest.approx(row["alpha"], rel=tol, abs=tol), name
        assert r["alpha_D"] == pytest.approx(row["D"], rel=tol, abs=tol), name
        assert r["alpha_xmin"] == pytest.approx(row["xmin"], rel=tol), name
        assert r["alpha_tail"] == row["num_pl_spikes"], name
        assert r["alpha_warning"] == row["warning"], name
        compared += 1
    return compared


def test_alpha_equals_weightwatcher_on_every_matrix_of_a_tiny_model(tmp_path, monkeypatch):
    pytest.importorskip("weightwatcher")
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lminspect.weights import open_store

    monkeypatch.setenv("LMINSPECT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    # k/v projections have 16 eigenvalues: weightwatcher's small-N fit; the rest 64
    cfg = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                      max_position_embeddings=128, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(tmp_path / "m")
    details = _hf_ww_details(model)
    assert any(row["num_pl_spikes"] < 11 for row in details.values())
    assert _compare_with_ww(open_store(tmp_path / "m"), details, 1e-6) == 16


@pytest.mark.smollm2
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LMINSPECT_SLOW"), reason="slow (~3 min): set LMINSPECT_SLOW=1")
def test_alpha_equals_weightwatcher_on_smollm2(smollm2_dir):
    pytest.importorskip("weightwatcher")
    from transformers import AutoModelForCausalLM

    from lminspect.weights import open_store

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype="float32").eval()
    details = _hf_ww_details(model)
    assert _compare_with_ww(open_store(smollm2_dir), details, 3e-6) >= 210


def test_cli_stats_shows_fit_quality_and_warnings(tiny_llama_dir):
    import json

    from typer.testing import CliRunner

    from lminspect.cli import app

    r = CliRunner().invoke(app, ["stats", str(tiny_llama_dir), "-t", "layers.0.*", "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    fitted = [x for x in rows if "alpha" in x]
    assert len(fitted) == 7 and all({"alpha_D", "alpha_xmin", "alpha_tail", "alpha_warning"} <= set(x) for x in fitted)
    r = CliRunner().invoke(app, ["stats", str(tiny_llama_dir), "-t", "layers.0.*"])
    assert r.exit_code == 0 and " alpha_D " in r.output and "alpha_tail" in r.output
    flagged = [x for x in fitted if x["alpha_warning"]]
    assert flagged  # random init: several matrices fall outside weightwatcher's 2..6
    for x in flagged:
        assert f"{x['canonical']}: {x['alpha_warning']} (alpha {x['alpha']:.3g}" in r.output
