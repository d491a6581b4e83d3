"""Unified embeddings (lmplay): a sacrificial MLP computes the token embedding while training.

Training: ``embed(t) = mlp(table[t])`` with ``table`` wider than the model (``ue_mult * dim``).
The tied output head uses the same computed table. Export bakes ``mlp(table)`` into a plain
``embed.tokens.weight`` and drops ``table`` and ``mlp``; the exported model is an ordinary GPT-2.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lminspect.experiments import Experiment
from lminspect.experiments.builtin import make_gpt2ish

__version__ = "0.1.0"


class UnifiedEmbedding(nn.Module):
    """Drop-in for ``nn.Embedding``: ``forward(ids)`` and a ``weight`` property (the full table)."""

    def __init__(self, vocab_size: int, dim: int, mult: int = 3, hidden_mult: int = 2) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab_size, dim * mult)  # sacrificial
        self.mlp = nn.Sequential(  # sacrificial
            nn.Linear(dim * mult, dim * hidden_mult), nn.GELU(), nn.Linear(dim * hidden_mult, dim)
        )
        nn.init.normal_(self.table.weight, 0.0, 0.02)
        self.embedding_dim = dim
        self.num_embeddings = vocab_size

    @property
    def weight(self) -> torch.Tensor:
        """The computed ``[vocab, dim]`` embedding (what the tied head multiplies with)."""
        return self.mlp(self.table.weight)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.table(ids))


def make_model(vocab_size: int, seq_len: int, ue_mult: int = 3, ue_hidden_mult: int = 2, **overrides: Any):
    model = make_gpt2ish(vocab_size, seq_len, **overrides)
    model.embed.tokens = UnifiedEmbedding(vocab_size, model.config.dim, ue_mult, ue_hidden_mult)
    return model


@torch.no_grad()
def export(model: nn.Module) -> dict[str, torch.Tensor]:
    """Canonical GPT-2 tensors: the computed table replaces the sacrificial parts."""
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("embed.tokens.")}
    sd["embed.tokens.weight"] = model.embed.tokens.weight.detach().clone()
    return sd


unified_embeddings = Experiment(
    name="unified_embeddings",
    description=(
        "gpt2ish with lmplay's unified embeddings: a wide table + MLP computes token embeddings while training.\n"
        "The table (ue_mult x width) and the MLP are sacrificial: export runs the MLP over the vocabulary "
        "once and stores a plain embed.tokens.weight, so the result is an ordinary GPT-2 with the baseline's "
        "parameter count. lmplay reports a 6-layer UE model beating a 12-layer baseline."
    ),
    model_factory=make_model,
    arch="gpt2",
    sacrificial=("embed.tokens.table", "embed.tokens.mlp"),
    export=export,
)
