"""Per-item comparison with the REAL lm-evaluation-harness on SmolLM2 (skipped when lm-eval is absent).

lm-eval runs its own pipeline (local task YAML + jsonl, offline, ``HFLM`` on the SmolLM2 HF
directory; see benchmarks/lmeval_peer.py); lminspect's batched scoring must give the same
per-ending log-likelihoods (<= 1e-4), the same choices and the same acc / acc_norm."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

pytest.importorskip("lm_eval")

import lmeval_peer  # noqa: E402


@pytest.mark.smollm2
@pytest.mark.xdist_group("smollm2")
def test_items_match_lm_eval(smollm2_dir):
    import torch

    from lminspect.evals.mc import MCItem, evaluate_mc
    from lminspect.models import load_model
    from lminspect.tokenizer import load_tokenizer
    from lminspect.weights import open_store

    items = [  # HellaSwag-like, lengths differ so one padded batch mixes them
        MCItem("A man is sitting on a roof. He", ["is using wrap to wrap a pair of skis.",
               "is ripping level tiles off.", "is holding a rubik's cube.", "starts pulling up roofing on a roof."], 3),
        MCItem("Baking cookies: A woman puts flour, sugar and butter in a bowl and stirs them together with a wooden "
               "spoon until the dough is smooth. She", ["then bakes the dough in the oven.", "eats the bowl.",
               "throws the spoon at the dog and leaves the kitchen for good.", "sings."], 0),
        MCItem("The cat", ["sat on the mat.", "flew to the moon on a rocket made of cheese.", "meowed.", "is blue"], 0),
    ]
    torch.manual_seed(0)
    peer = lmeval_peer.run(lmeval_peer.load_hflm(smollm2_dir, 4), items)
    store = open_store(str(smollm2_dir))
    res = evaluate_mc(load_model(store), load_tokenizer(store), items, batch_size=3)
    for ours, theirs in zip(res.items, peer.lls, strict=True):
        assert ours.lls == pytest.approx(theirs, abs=1e-4)
    assert res.acc == pytest.approx(peer.metrics["acc"]) and res.acc_norm == pytest.approx(peer.metrics["acc_norm"])
