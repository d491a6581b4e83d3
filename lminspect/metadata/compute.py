"""Batch metadata (seed 001): one row per sample of a data source, written to parquet.

Columns: ``id`` (first 16 hex digits of the text's SHA-1: stable across runs and machines),
``index`` (document index in the source, the key the ordered training stream uses), ``split``
(``train`` / ``val`` as the training pipeline holds documents out: ``index % 20 == 0`` is val),
``n_chars``, ``n_tokens`` (reference tokenizer), ``ppl`` and ``nll`` (the reference model's
perplexity on the sample through the engine's forward, in windows of its context length,
every token after the first scored) and one column per metric (:mod:`lminspect.metadata.metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lminspect.documents import sample_id
from lminspect.errors import UserError
from lminspect.metadata.metrics import available_metrics

if TYPE_CHECKING:  # annotations only
    from lminspect.models.common import LM


def sample_nll(model: LM, ids: list[int], ctx: int) -> tuple[float, int]:
    """(summed NLL, scored tokens) of one sample under ``model`` (windows of ``ctx`` tokens)."""
    import torch
    import torch.nn.functional as F

    total, n = 0.0, 0
    for s in range(0, max(1, len(ids) - 1), ctx - 1):
        w = ids[s:s + ctx]
        if len(w) < 2:
            break
        x = torch.tensor([w], device=model.device)
        with torch.inference_mode():
            logits = model(x)[0, :-1].float()
        total += float(F.cross_entropy(logits, x[0, 1:], reduction="sum"))
        n += len(w) - 1
    return total, n


def compute_metadata(source: str, model_ref: str | None, *, metrics: list[str] | None = None,
                     limit: int | None = None, text_field: str = "text", device: str = "cpu",
                     load_plugins: bool = True,
                     progress: Callable[[int], None] | None = None) -> dict[str, list[Any]]:
    """The metadata table (as columns) for ``source`` (anything ``lminspect train --data`` takes)."""
    from lminspect.documents import iter_documents
    from lminspect.train.data import VAL_EVERY, load_train_tokenizer

    known = available_metrics(load_plugins)
    names = list(known) if metrics is None else metrics
    bad = [m for m in names if m not in known]
    if bad:
        raise UserError(f"unknown metric(s) {', '.join(bad)} (available: {', '.join(known)})")
    model = None
    if model_ref:
        from lminspect.models.open import open_model

        _, model, tok = open_model(model_ref, device=device)
        encode = _encoder(tok)
        ctx = min(model.context_length, 1024)
    else:  # no reference model: lengths in the shipped training tokenizer, no perplexity
        tt = load_train_tokenizer("default")
        encode = tt.encode
    cols: dict[str, list[Any]] = {k: [] for k in ("id", "index", "split", "n_chars", "n_tokens")}
    if model is not None:
        cols.update(ppl=[], nll=[])
    for m in names:
        cols[m] = []
    for k, (i, text) in enumerate(iter_documents(source, split="train", field=text_field)):
        if limit is not None and k >= limit:
            break
        if not text:
            continue
        ids = encode(text)
        cols["id"].append(sample_id(text))
        cols["index"].append(i)
        cols["split"].append("val" if i % VAL_EVERY == 0 else "train")
        cols["n_chars"].append(len(text))
        cols["n_tokens"].append(len(ids))
        if model is not None:
            s, n = sample_nll(model, ids, ctx)
            nll = s / n if n else float("nan")
            cols["nll"].append(nll)
            cols["ppl"].append(math.exp(min(nll, 700.0)) if n else float("nan"))
        for m in names:
            cols[m].append(float(known[m](text, ids)))
        if progress is not None:
            progress(k + 1)
    if not cols["id"]:
        raise UserError(f"data {source!r}: no documents")
    return cols


def _encoder(tok: Any) -> Callable[[str], list[int]]:
    from lminspect.evals.mc import make_encoder

    return make_encoder(tok)


def write_parquet(cols: dict[str, list[Any]], out: str | Path) -> Path:
    """Write the table atomically (pyarrow)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lminspect.fsutil import atomic_path

    out = Path(out)
    with atomic_path(out) as tmp:
        pq.write_table(pa.table(cols), str(tmp))
    return out
