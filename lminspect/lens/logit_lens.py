"""Logit lens: read the next-token distribution out of the residual stream after every plan position.

The read-out is the model's own final norm and head applied to the residual (``LM.logits``),
each residual normalised by its *own* scale (TransformerLens' ``apply_ln=True``). Rows are the
embedding (``resid_in.0``) and then ``resid_out.{p}`` for every plan position ``p``, so the last
row is exactly the model's prediction. Plan positions, not layer indices, order the rows: a
layer run three times gives three rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lminspect.errors import UserError
from lminspect.lens.readout import Target, plan_labels
from lminspect.models.layercall import LayerCall
from lminspect.models.sites import site_name

if TYPE_CHECKING:  # annotations only
    from lminspect.models.common import LM


@dataclass
class LensResult:
    """Top-k tokens per read-out row and, with a target, its rank / probability per row."""

    plan: str  # the plan in the compact grammar
    tokens: list[str]  # the prompt's tokens
    position: int  # which token position was read (0-based)
    labels: list[str]  # "embed", then one label per plan position (see plan_labels)
    layers: list[int | None]  # layer index per row (None for the embedding)
    top_ids: np.ndarray  # [rows, k]
    top_tokens: list[list[str]]  # [rows][k]
    top_probs: np.ndarray  # [rows, k]
    target: Target | None = None
    target_rank: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # [rows], 1 = top
    target_prob: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [rows]
    target_logit: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [rows]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per read-out row (what ``table()`` shows and JSON holds)."""
        out = []
        for r, label in enumerate(self.labels):
            row: dict[str, Any] = {"row": label, "layer": self.layers[r],
                                   "top": [[t, round(float(p), 4)] for t, p in zip(self.top_tokens[r], self.top_probs[r],
                                                                                  strict=True)]}
            if self.target is not None:
                row.update(rank=int(self.target_rank[r]), prob=float(self.target_prob[r]),
                           logit=float(self.target_logit[r]))
            out.append(row)
        return out

    def __repr__(self) -> str:
        from lminspect.lens.render import lens_table, text_of

        return text_of(lens_table(self))

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan, "tokens": self.tokens, "position": self.position,
                "target": None if self.target is None else {"id": self.target.id, "text": self.target.text},
                "rows": self.rows()}

    def first_top(self) -> int | None:
        """The first row from which the target stays the top token to the end (None: never)."""
        if self.target is None or not len(self.target_rank):
            return None
        first = None
        for r in range(len(self.target_rank) - 1, -1, -1):
            if self.target_rank[r] != 1:
                break
            first = r
        return first


@torch.inference_mode()
def logit_lens(lm: LM, ids: Sequence[int], plan: list[LayerCall] | None = None, *, k: int = 5,
               target: Target | None = None, position: int = -1, tok: Any = None,
               plan_text: str = "all") -> LensResult:
    """The lens of ``ids`` under ``plan`` at token ``position`` (negative counts from the end)."""
    from lminspect.lens.readout import token_labels

    plan = lm._check_plan(plan)
    T = len(ids)
    pos = position + T if position < 0 else position
    if not 0 <= pos < T:
        raise UserError(f"token position {position} is out of range for a prompt of {T} tokens")
    if k < 1:
        raise UserError(f"top-k must be >= 1, got {k}")
    x = torch.tensor([list(ids)], dtype=torch.long, device=lm.device)
    _, acts = lm.run_with_cache(x, [site_name("resid_in", 0), "resid_out"], plan=plan)
    resid = torch.stack([acts[site_name("resid_in", 0)][0, pos]] + [acts[site_name("resid_out", p)][0, pos] for p in range(len(plan))])
    logits = lm.logits(resid).float()  # [rows, V]
    probs = torch.softmax(logits, dim=-1)
    k = min(k, probs.shape[-1])
    top_p, top_i = probs.topk(k, dim=-1)
    decode = (lambda i: token_labels(tok, [i])[0]) if tok is not None else str
    res = LensResult(
        plan=plan_text, tokens=token_labels(tok, ids) if tok is not None else [str(i) for i in ids], position=pos,
        labels=["embed", *plan_labels(plan)], layers=[None, *(c.index for c in plan)],
        top_ids=top_i.numpy(), top_tokens=[[decode(int(i)) for i in row] for row in top_i], top_probs=top_p.numpy(),
    )
    if target is not None:
        tl = logits[:, target.id]
        res.target = target
        res.target_logit = tl.numpy()
        res.target_prob = probs[:, target.id].numpy()
        res.target_rank = ((logits > tl[:, None]).sum(-1) + 1).numpy()
    return res


def lens_of_text(lm: LM, tok: Any, prompt: str | Sequence[int], plan: list[LayerCall] | None = None, *,
                 target: str | int | None = None, k: int = 5, position: int = -1) -> tuple[LensResult, Target | None]:
    """The logit lens of a prompt (text or ids) under ``plan``, with ``target`` (``" Paris"``,
    ``"id:42"``) resolved by the tokenizer: what the CLI (``lens``), the REPL (``m.lens``) and the
    TUI's lens view all show. Returns the result and the resolved target (its ``note`` says when
    only the first of several tokens is used)."""
    from lminspect.lens.readout import encode_prompt, resolve_token
    from lminspect.stitch import plan_to_string

    ids = encode_prompt(tok, prompt, lm.context_length, vocab=lm.vocab_size)
    tgt = resolve_token(tok, target, lm.vocab_size) if target is not None else None
    text = plan_to_string(plan, lm.n_layers) if plan is not None else "all"
    return logit_lens(lm, ids, plan, k=k, target=tgt, position=position, tok=tok, plan_text=text), tgt

