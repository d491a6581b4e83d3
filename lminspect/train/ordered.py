"""Ordered training data (seed 001, llama2_prebiasing's custom sampler), from ``lminspect data metadata``'s parquet.

:class:`OrderedStream` is a drop-in for :class:`lminspect.train.data.PackedStream` (same packing,
same ``next_batch`` / ``state``) that feeds the *training* documents in a chosen order:

- ``asc`` / ``desc``: sorted by a metadata column (ties by document index);
- ``shuffle``: a seeded random permutation (the control run);
- ``shuffle-within-buckets``: sorted, cut into ``buckets`` equal buckets, shuffled inside each
  (a curriculum without the exact order).

It also reports, per step, how many documents it has fed and the running mean of every numeric
metadata column over them (``seen_docs``, ``seen_<metric>`` in stats.jsonl: the input side of the
saturation plot), and :meth:`seen_ids` lists their sample ids for the checkpoint's
``seen_ids.json``. Documents are held in memory (fine for the corpora this is meant for).
"""

from __future__ import annotations

import random
from typing import Any

from lminspect.documents import sample_id
from lminspect.errors import UserError

ORDERS = ("asc", "desc", "shuffle", "shuffle-within-buckets")
SKIP_COLUMNS = {"id", "index", "split"}


def read_metadata(path: str) -> dict[str, list[Any]]:
    """A metadata parquet file as columns."""
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pydict()
    except FileNotFoundError as e:
        raise UserError(f"--metadata {path}: file not found") from e
    except Exception as e:  # noqa: BLE001 - pyarrow's errors become one line
        raise UserError(f"--metadata {path}: not a readable parquet file ({type(e).__name__}: {e})") from e


def make_order(keys: list[tuple[int, float]], order: str, seed: int = 0, buckets: int = 10) -> list[int]:
    """Document indices ordered by ``order`` from ``(index, metric value)`` pairs."""
    if order not in ORDERS:
        raise UserError(f"--order {order!r}: choose {', '.join(ORDERS)}")
    rng = random.Random(seed)
    if order == "shuffle":
        idx = [i for i, _ in sorted(keys)]
        rng.shuffle(idx)
        return idx
    ranked = [i for i, _ in sorted(keys, key=lambda kv: (kv[1], kv[0]), reverse=(order == "desc"))]
    if order != "shuffle-within-buckets":
        return ranked
    n = len(ranked)
    out: list[int] = []
    for b in range(buckets):
        part = ranked[b * n // buckets:(b + 1) * n // buckets]
        rng.shuffle(part)
        out.extend(part)
    return out


class OrderedStream:
    """Packed ``[seq_len + 1]`` windows from the training documents in a fixed order."""

    def __init__(self, source: str, tokenizer: Any, seq_len: int, *, split: str = "train",
                 text_field: str = "text", order_by: str | None = None, order: str = "asc",
                 metadata: str | None = None, seed: int = 0, state: dict[str, Any] | None = None) -> None:
        from lminspect.documents import iter_documents
        from lminspect.train.data import VAL_EVERY

        self.tokenizer, self.seq_len = tokenizer, seq_len
        docs = {i: t for i, t in iter_documents(source, split=split, field=text_field) if i % VAL_EVERY != 0 and t}
        if not docs:
            raise UserError(f"data {source!r}: no training documents")
        self.docs = docs
        meta = read_metadata(metadata) if metadata else None
        self.columns: dict[str, dict[int, float]] = {}
        self.ids: dict[int, str] = {}
        if meta is not None:
            if "index" not in meta:
                raise UserError(f"--metadata {metadata}: no 'index' column (make it with `lminspect data metadata`)")
            for col, vals in meta.items():
                if col in SKIP_COLUMNS or not vals or not isinstance(vals[0], int | float):
                    continue
                self.columns[col] = {int(i): float(v) for i, v in zip(meta["index"], vals, strict=True)
                                     if v is not None}
            for i, sid in zip(meta["index"], meta.get("id", []), strict=False):
                self.ids[int(i)] = str(sid)
        if order_by is not None:
            if meta is None:
                raise UserError(f"--order-by {order_by}: needs --metadata FILE.parquet "
                                "(make one with `lminspect data metadata`)")
            if order_by not in self.columns:
                raise UserError(f"--order-by {order_by!r}: not a metadata column "
                                f"(has: {', '.join(self.columns) or 'none'})")
            col = self.columns[order_by]
            missing = [i for i in docs if i not in col]
            if len(missing) == len(docs):
                raise UserError(f"--metadata {metadata}: describes none of the documents of {source!r}")
            keys = [(i, col[i]) for i in docs if i in col]
        else:
            if order != "shuffle":
                raise UserError(f"--order {order}: needs --order-by METRIC (only 'shuffle' works without one)")
            # with metadata, shuffle the same pool the sorted run orders, so the two compare
            described = set(self.ids) if meta is not None else set(docs)
            keys = [(i, 0.0) for i in docs if i in described] or [(i, 0.0) for i in docs]
        listed = {i for i, _ in keys}
        # documents the metadata does not describe are fed last, in source order
        self.order = make_order(keys, order, seed) + sorted(i for i in docs if i not in listed)
        st = state or {}
        self.pos = int(st.get("pos", 0))
        self.epoch = int(st.get("epoch", 0))
        self.buffer: list[int] = list(st.get("buffer", []))
        self._sums = {c: 0.0 for c in self.columns}
        self._counts = {c: 0 for c in self.columns}
        self._seen = 0
        for i in self.order[: self.pos] if self.epoch == 0 else self.order:
            self._account(i)

    def _account(self, i: int) -> None:
        self._seen += 1
        for c, vals in self.columns.items():
            v = vals.get(i)
            if v is not None:
                self._sums[c] += v
                self._counts[c] += 1

    def state(self) -> dict[str, Any]:
        return {"pos": self.pos, "epoch": self.epoch, "buffer": list(self.buffer), "ordered": True}

    def _fill(self, need: int) -> None:
        while len(self.buffer) < need:
            if self.pos >= len(self.order):
                self.pos, self.epoch = 0, self.epoch + 1
            i = self.order[self.pos]
            self.pos += 1
            if self.epoch == 0:
                self._account(i)
            self.buffer.extend(self.tokenizer.encode(self.docs[i]))
            self.buffer.append(self.tokenizer.eos_id)

    def next_window(self) -> list[int]:
        n = self.seq_len + 1
        self._fill(n)
        window = self.buffer[:n]
        self.buffer = self.buffer[n - 1:]
        return window

    def next_batch(self, n: int):
        import torch

        return torch.tensor([self.next_window() for _ in range(n)], dtype=torch.long)

    def stats(self) -> dict[str, float]:
        """``seen_docs`` and ``seen_<metric>`` (running mean over the documents fed so far)."""
        row: dict[str, float] = {"seen_docs": self._seen}
        for c in self.columns:
            if self._counts[c]:
                row[f"seen_{c}"] = self._sums[c] / self._counts[c]
        return row

    def seen_ids(self) -> list[str]:
        """Sample ids of every document fed so far (all of them after the first epoch)."""
        idx = self.order[: self.pos] if self.epoch == 0 else self.order
        return [self.ids.get(i) or sample_id(self.docs[i]) for i in idx]
