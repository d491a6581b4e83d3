"""Perplexity of a model (optionally through a layer plan) on a text set.

Texts are tokenized, joined with the EOS token between documents (when the tokenizer has
one), cut into non-overlapping windows of ``ctx_len`` tokens, and every token after the
first of each window is scored. ``ppl = exp(mean NLL)``. Non-overlapping windows are the
cheap, standard choice (a strided sliding window gives slightly lower numbers).
Texts come from :func:`lminspect.documents.read_documents` (files, folders, hub ids, ``builtin``).
Under torchrun the windows are shared out (window k on rank k % world) and the NLL sums and token
counts added over the processes, so every process gets the single-process result (to float
rounding of the sum); every process must call it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lminspect.distributed import join, shard, sum_over_ranks
from lminspect.errors import UserError

if TYPE_CHECKING:  # annotations only
    from lminspect.models.common import LM

__all__ = ["PPLResult", "evaluate_perplexity"]


@dataclass
class PPLResult:
    ppl: float
    nll: float  # mean negative log-likelihood per scored token (nats)
    tokens: int  # scored tokens
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"ppl": self.ppl, "nll": self.nll, "tokens": self.tokens, "seconds": self.seconds,
                "tokens_per_s": self.tokens_per_s}


def evaluate_perplexity(model: LM, tokenizer: Any, texts: Iterable[str], *, plan: Any = None,
                        ctx_len: int = 512, max_tokens: int | None = None, eos: int | None = None,
                        progress: Callable[[int, int], None] | None = None) -> PPLResult:
    """Perplexity over non-overlapping ``ctx_len`` windows of the joined token stream."""
    import torch

    from lminspect.evals.mc import make_encoder

    encode = make_encoder(tokenizer)
    if plan is not None and hasattr(model, "layers"):
        from lminspect.stitch import parse_plan

        plan = parse_plan(plan, len(model.layers))
    limit = getattr(model, "context_length", None)
    if limit:
        ctx_len = min(ctx_len, int(limit))
    if ctx_len < 2:
        raise UserError(f"context length {ctx_len} is too short for perplexity")
    stream: list[int] = []
    for t in texts:
        stream.extend(encode(t))
        if eos is not None:
            stream.append(eos)
        if max_tokens is not None and len(stream) >= max_tokens + 1:
            break
    if max_tokens is not None:
        stream = stream[: max_tokens + 1]
    if len(stream) < 2:
        raise UserError("not enough text for perplexity (need at least 2 tokens)")
    windows = [stream[i : i + ctx_len] for i in range(0, len(stream), ctx_len)]
    windows = [w for w in windows if len(w) >= 2]
    dev = getattr(model, "device", "cpu")
    rank, world, _ = join(str(dev))
    mine = shard(len(windows), rank, world)
    nll_sum, n_tok = 0.0, 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for k, i in enumerate(mine):
            w = windows[i]
            ids = torch.tensor([w], device=dev)
            out = model.forward(ids, plan=plan) if plan is not None else model.forward(ids)
            logits = getattr(out, "logits", out)[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
            nll_sum += float(nll)
            n_tok += len(w) - 1
            if progress is not None:
                progress(k + 1, len(mine))
    if world > 1:
        nll_sum, n_tok = sum_over_ranks([nll_sum, n_tok], world)
        n_tok = int(n_tok)
    dt = time.perf_counter() - t0
    mean = nll_sum / n_tok
    return PPLResult(ppl=math.exp(min(mean, 700.0)), nll=mean, tokens=n_tok, seconds=dt)


