"""Perplexity of a model (optionally through a layer plan) on a text set.

Texts are tokenized, joined with the EOS token between documents (when the tokenizer has
one), cut into non-overlapping windows of ``ctx_len`` tokens, and every token after the
first of each window is scored. ``ppl = exp(mean NLL)``. Non-overlapping windows are the
cheap, standard choice (a strided sliding window gives slightly lower numbers).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lminspect.errors import UserError

__all__ = ["PPLResult", "evaluate_perplexity", "load_texts"]


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


def load_texts(source: str | Path | Sequence[str], *, field: str = "text", limit: int | None = None,
               split: str | None = None) -> list[str]:
    """Documents from a .txt file (documents separated by blank-line pairs), .jsonl/.json/.parquet
    (``field``), a folder of .txt files, a list of strings, or a HF dataset id."""
    if isinstance(source, list | tuple):
        texts = [str(t) for t in source]
    else:
        path = Path(source)
        if path.is_dir():
            texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(path.glob("*.txt"))]
        elif path.is_file():
            suffix = path.suffix.lower()
            if suffix in (".jsonl", ".json", ".parquet"):
                from lminspect.evals.mc import _rows_from_file

                texts = []
                for k, row in enumerate(_rows_from_file(path)):
                    if not isinstance(row, dict) or field not in row:
                        raise UserError(f"{path}: item {k} has no '{field}' field")
                    texts.append(str(row[field]))
            else:
                raw = path.read_text(encoding="utf-8", errors="replace")
                texts = [d.strip() for d in raw.split("\n\n\n") if d.strip()]
        elif str(source).lower().endswith((".txt", ".md", ".jsonl", ".json", ".parquet")) or str(
                source).startswith(("/", ".", "~")):  # a path, not a hub id
            raise UserError(f"text file not found: {source}")
        else:
            from lminspect.evals.mc import _rows_from_hub

            texts = [str(r[field]) for r in _rows_from_hub(str(source), split or "test") if r.get(field)]
    texts = [t for t in texts if t.strip()]
    if limit is not None:
        texts = texts[:limit]
    if not texts:
        raise UserError(f"no text found in {source if not isinstance(source, list | tuple) else 'texts'}")
    return texts


def evaluate_perplexity(model: Any, tokenizer: Any, texts: Iterable[str], *, plan: Any = None,
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
    nll_sum, n_tok = 0.0, 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for k, w in enumerate(windows):
            ids = torch.tensor([w], device=dev)
            out = model.forward(ids, plan=plan) if plan is not None else model.forward(ids)
            logits = getattr(out, "logits", out)[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
            nll_sum += float(nll)
            n_tok += len(w) - 1
            if progress is not None:
                progress(k + 1, len(windows))
    dt = time.perf_counter() - t0
    mean = nll_sum / n_tok
    return PPLResult(ppl=math.exp(min(mean, 700.0)), nll=mean, tokens=n_tok, seconds=dt)


