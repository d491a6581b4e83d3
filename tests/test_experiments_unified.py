"""The unified-embeddings plugin's export is an ordinary GPT-2 with the same outputs."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

PLUGIN_SRC = Path(__file__).resolve().parent.parent / "plugins" / "lminspect-unified-embeddings"


def test_export_bakes_embedding_and_matches_logits(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN_SRC))
    from lminspect_unified_embeddings import unified_embeddings as exp

    from lminspect.experiments import export_state_dict
    from lminspect.experiments.base import export_config
    from lminspect.models import GPT2, config_from_hf

    torch.manual_seed(0)
    model = exp.build(64, 16, n_layer=1, dim=32, n_head=2).eval()
    sd = export_state_dict(exp, model)
    assert sd["embed.tokens.weight"].shape == (64, 32)
    assert not any("table" in k or "tokens.mlp" in k for k in sd)
    plain = GPT2(config_from_hf(export_config(exp, model))).eval()
    plain.load_state_dict(sd, strict=True)
    ids = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(plain(ids), model(ids), rtol=1e-5, atol=1e-5)
    sys.modules.pop("lminspect_unified_embeddings", None)
