"""Training data: documents -> tokens -> fixed-length packed sequences, with a resumable position.

Sources (``--data`` or a plan step's ``data``) are anything :func:`lminspect.documents.iter_documents`
reads: ``builtin`` (the small corpus shipped in ``lminspect/data/train_corpus``, works offline),
a local .txt/.jsonl/.json/.parquet file or a folder of them, or a Hugging Face dataset id,
optionally ``ID:CONFIG`` (e.g. ``wikimedia/wikipedia:20231101.en``), streamed. The document
numbering rules (which the resume position and the validation split rely on) are there.

Validation data is carved out of the same split: document ``i`` is held out when
``i % VAL_EVERY == 0``. This works for streams of unknown length and never changes
when the dataset grows.

Packing: every document is followed by the end-of-text token and the stream is cut
into windows of ``seq_len + 1`` tokens (inputs ``[:-1]``, targets ``[1:]``); consecutive
windows share one token so no target is lost. The position (next document index,
epoch, leftover tokens) is a small JSON-able dict stored in checkpoints.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lminspect.documents import iter_documents
from lminspect.errors import UserError

VAL_EVERY = 20
CORPUS_DIR = Path(__file__).resolve().parent.parent / "data" / "train_corpus"
BUILTIN_TOKENIZER = CORPUS_DIR / "tokenizer.json"


# ---------------------------------------------------------------- tokenizers


class TrainTokenizer:
    """What training needs from a tokenizer: encode, vocab size, end-of-text id, tokenizer.json."""

    def __init__(self, tok: Any | None, name: str) -> None:
        self._tok = tok  # tokenizers.Tokenizer, or None for raw bytes
        self.name = name
        if tok is None:
            self.vocab_size = 257
            self.eos_id = 256
        else:
            self.vocab_size = tok.get_vocab_size()
            eos = None
            for cand in ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>"):
                eos = tok.token_to_id(cand)
                if eos is not None:
                    break
            self.eos_id = eos if eos is not None else 0

    def encode(self, text: str) -> list[int]:
        if self._tok is None:
            return list(text.encode("utf-8"))
        return self._tok.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        if self._tok is None:
            return [self.encode(t) for t in texts]
        return [e.ids for e in self._tok.encode_batch(texts)]

    def decode(self, ids: list[int]) -> str:
        if self._tok is None:
            return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")
        return self._tok.decode(ids)

    def to_json(self) -> str | None:
        return None if self._tok is None else self._tok.to_str()


def load_train_tokenizer(spec: str) -> TrainTokenizer:
    """``default`` (shipped BPE, vocab 4096), ``byte`` (vocab 257), or a tokenizer.json / its directory."""
    from tokenizers import Tokenizer

    if spec == "byte":
        return TrainTokenizer(None, "byte")
    path = BUILTIN_TOKENIZER if spec in ("default", "builtin") else Path(spec)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"tokenizer {spec!r}: no tokenizer.json at {path}")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001
        raise UserError(f"tokenizer {path}: cannot be read ({e})") from e
    return TrainTokenizer(tok, spec)


# ---------------------------------------------------------------- documents


def _builtin_docs() -> list[str]:
    """The shipped training corpus as a list (kept for tests that sample it)."""
    return [text for _, text in iter_documents("builtin:train")]


# ---------------------------------------------------------------- packing


class PackedStream:
    """Endless, resumable stream of packed ``[seq_len + 1]`` token windows.

    ``part`` selects the train documents (``i % VAL_EVERY != 0``) or the held-out
    validation ones. When the source runs out the stream starts again (``epoch`` + 1).
    """

    def __init__(self, source: str, tokenizer: TrainTokenizer, seq_len: int, *, split: str = "train",
                 text_field: str = "text", part: str = "train", state: dict[str, Any] | None = None) -> None:
        self.source, self.tokenizer, self.seq_len = source, tokenizer, seq_len
        self.split, self.text_field, self.part = split, text_field, part
        state = state or {}
        self.doc = int(state.get("doc", 0))
        self.epoch = int(state.get("epoch", 0))
        self.buffer: list[int] = list(state.get("buffer", []))
        self._it: Iterator[tuple[int, str]] | None = None

    def state(self) -> dict[str, Any]:
        return {"doc": self.doc, "epoch": self.epoch, "buffer": list(self.buffer)}

    def _keep(self, i: int) -> bool:
        held_out = i % VAL_EVERY == 0
        return held_out if self.part == "val" else not held_out

    def _fill(self, need: int) -> None:
        empty_epochs = 0
        while len(self.buffer) < need:
            if self._it is None:
                self._it = iter_documents(self.source, split=self.split, field=self.text_field, start=self.doc)
            got_any = False
            for i, text in self._it:
                self.doc = i + 1
                if not self._keep(i) or not text:
                    continue
                got_any = True
                self.buffer.extend(self.tokenizer.encode(text))
                self.buffer.append(self.tokenizer.eos_id)
                if len(self.buffer) >= need:
                    return
            # source exhausted: next epoch
            self._it = None
            self.doc = 0
            self.epoch += 1
            empty_epochs = 0 if got_any else empty_epochs + 1
            if empty_epochs >= 2:
                raise UserError(f"data {self.source!r}: no {self.part} text found")

    def next_window(self) -> list[int]:
        n = self.seq_len + 1
        self._fill(n)
        window = self.buffer[:n]
        self.buffer = self.buffer[n - 1 :]  # one-token overlap: the last target starts the next input
        return window

    def next_batch(self, n: int):
        import torch

        return torch.tensor([self.next_window() for _ in range(n)], dtype=torch.long)


def state_to_json(state: dict[str, Any]) -> str:
    return json.dumps(state, separators=(",", ":"))
