"""Reading text documents from any source: the one loader behind training, metadata,
activation statistics, perplexity and the cloze builder.

:func:`iter_documents` streams ``(index, text)`` pairs (training resumes from an index);
:func:`read_documents` is the list form with a ``limit`` that evaluation needs.

Sources
-------
- ``builtin`` or ``default``: a corpus shipped in the package. Which one depends on the
  use, because the two exist for different jobs: the readers for training, metadata and
  activations (:func:`iter_documents`) take ``builtin:train`` (CPython docstrings,
  ``lminspect/data/train_corpus``); the evaluation reader (:func:`read_documents`, used by
  perplexity and ``data make-mc``) takes ``builtin:eval`` (the EB1911 Shakespeare article,
  ``lminspect/data/corpus``), text the shipped tokenizer and models were not trained on.
  ``builtin:train`` and ``builtin:eval`` name one explicitly anywhere.
- a list or tuple of strings: the documents themselves.
- a file, by suffix:

  - ``.txt``, ``.text``, ``.md``: documents are the blocks separated by two or more blank
    lines (a line of spaces counts as blank), each stripped. A file with fewer than two
    such blocks is split at single blank lines (paragraphs) instead, so plain prose gives
    many documents too. Both shipped corpora use the two-blank-line form.
  - ``.jsonl``, ``.ndjson``, ``.jsonl.gz``: one JSON object per non-blank line; the
    document is its ``field``.
  - ``.json``: a JSON list of objects (a file of JSON lines is read as ``.jsonl``).
  - ``.parquet``: the column ``field``, read a batch at a time.
- a folder: every ``.txt``/``.text``/``.jsonl``/``.ndjson``/``.jsonl.gz``/``.json``/
  ``.parquet`` file below it (recursively, hidden ones skipped, sorted by path), each read
  as above, numbered on from the previous file. ``.md`` counts only when named directly:
  every Hugging Face dataset folder has a README.md.
- anything else: a Hugging Face dataset id (``hf:`` prefix optional, ``ID:CONFIG`` for a
  config), streamed with ``datasets`` (needs internet or its cache). ``hf:PATH`` hands a
  local dataset repo folder (a git clone of a hub dataset, say) to ``datasets`` the same way. A source that looks
  like a path (a known suffix, or starting with ``/``, ``.`` or ``~``) is never a hub id:
  if it does not exist that is a "not found" error, decided in :func:`locate` only.

Rules
-----
- Document ``i`` is the ``i``-th document in reading order. Rows whose text is empty or
  null still count (as ``""``), so a row number in a .jsonl/.parquet/hub dataset is its
  document index. Training stores this index to resume, holds out ``i % VAL_EVERY == 0``
  for validation, and batch metadata keys its ``index`` column on it; so the numbering of
  a source never depends on ``start`` or ``limit``.
- :func:`read_documents` drops empty documents; :func:`iter_documents` keeps them.
- Bad input raises :class:`~lminspect.errors.UserError` with one line naming the file (or
  dataset) and the problem: a missing path, an unknown suffix, invalid JSON, a row without
  ``field`` (its fields are listed) or with a non-text value, a source with no documents,
  a hub dataset that cannot be reached.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Generator, Iterator, Sequence
from itertools import count, islice
from pathlib import Path
from typing import IO, Any

from lminspect.errors import UserError

__all__ = ["BUILTIN_CORPORA", "DOCUMENT_SUFFIXES", "builtin_corpus", "file_suffix", "iter_documents", "iter_rows", "locate",
           "read_documents"]

_DATA = Path(__file__).resolve().parent / "data"
BUILTIN_CORPORA: dict[str, Path] = {
    "train": _DATA / "train_corpus" / "corpus.txt",
    "eval": _DATA / "corpus" / "eb1911_shakespeare.txt",
}
TEXT_SUFFIXES = (".txt", ".text", ".md")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz")
DOCUMENT_SUFFIXES = TEXT_SUFFIXES + JSONL_SUFFIXES + (".json", ".parquet")
_FOLDER_SUFFIXES = tuple(s for s in DOCUMENT_SUFFIXES if s != ".md")
_PATH_LIKE_SUFFIXES = DOCUMENT_SUFFIXES + (".csv", ".tsv", ".gz", ".zip", ".arrow")

Source = str | os.PathLike[str] | Sequence[str]


def sample_id(text: str) -> str:
    """Stable sample id: the first 16 hex digits of the text's SHA-1."""
    import hashlib

    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def builtin_corpus(name: str = "train") -> Path:
    """The shipped corpus ``name`` (``train`` or ``eval``; see the module docstring)."""
    try:
        return BUILTIN_CORPORA[name]
    except KeyError:
        raise UserError(f"unknown builtin corpus {name!r} (have: {', '.join(BUILTIN_CORPORA)})") from None


def file_suffix(path: Path) -> str:
    """The suffix that decides how a file is read (``.jsonl.gz`` counts as one)."""
    name = path.name.lower()
    return ".jsonl.gz" if name.endswith(".jsonl.gz") else path.suffix.lower()


def locate(source: str | os.PathLike[str], builtin: str = "train") -> Path | str:
    """The local file/folder to read (a ``Path``), or a hub dataset id (a ``str``).

    The only place that tells paths from hub ids, and so the only "not found" check.
    """
    if isinstance(source, os.PathLike):
        path = Path(source).expanduser()
    else:
        text = str(source)
        if text in ("builtin", "default"):
            return builtin_corpus(builtin)
        if text.startswith("builtin:"):
            return builtin_corpus(text.partition(":")[2])
        if text.startswith("hf:"):
            return text[3:]
        path = Path(text).expanduser()
        looks_like_path = text.startswith(("/", ".", "~")) or file_suffix(path) in _PATH_LIKE_SUFFIXES
        if not path.exists() and not looks_like_path:
            return text
    if not path.exists():
        raise UserError(f"{path}: file not found")
    return path


def iter_documents(source: Source, *, split: str = "train", field: str = "text", start: int = 0,
                   builtin: str = "train") -> Iterator[tuple[int, str]]:
    """Yield ``(index, text)`` for every document of ``source`` from index ``start`` on.

    Streams (a file or dataset is never held whole), so training can resume at ``start``.
    ``split`` matters for hub datasets only; ``builtin`` picks the shipped corpus that
    ``builtin``/``default`` means. Raises :class:`UserError` if the source has no document.
    """
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if isinstance(source, list | tuple):
        label = "the given texts"
        docs: Iterator[tuple[int, str]] = ((i, str(source[i])) for i in range(start, len(source)))
    else:
        where = locate(source, builtin)
        if isinstance(where, Path):
            label = str(where)
            docs = _iter_local(where, field, start)
        else:
            label = f"dataset {where!r} (split {split!r})"
            docs = _iter_hub(where, split, field, start)
    empty = True
    for item in docs:
        empty = False
        yield item
    if empty and start == 0:
        raise UserError(f"{label}: no documents")


def read_documents(source: Source, *, split: str = "test", field: str = "text", limit: int | None = None,
                   builtin: str = "eval") -> list[str]:
    """The first ``limit`` non-empty documents of ``source`` as a list (evaluation's form).

    Defaults suit evaluation: a hub dataset's ``test`` split, ``builtin`` = the eval corpus.
    """
    if limit is not None and limit < 1:
        raise UserError(f"limit must be at least 1, got {limit}")
    docs: list[str] = []
    for _, text in iter_documents(source, split=split, field=field, builtin=builtin):
        if text.strip():
            docs.append(text)
            if limit is not None and len(docs) >= limit:
                break
    if not docs:
        label = "the given texts" if isinstance(source, list | tuple) else str(source)
        raise UserError(f"{label}: no text found")
    return docs


# ---------------------------------------------------------------- local files


def _iter_local(path: Path, field: str, start: int) -> Iterator[tuple[int, str]]:
    """Documents of a file or of every document file in a folder, numbered on across files."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and file_suffix(p) in _FOLDER_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise UserError(f"{path}: no {'/'.join(_FOLDER_SUFFIXES)} files in this folder")
    else:
        files = [path]
    offset = 0
    for f in files:
        skip = max(0, start - offset)
        reader = _read_file(f, field, skip)
        k = skip
        try:
            while True:
                text = next(reader)
                yield offset + k, text
                k += 1
        except StopIteration as done:
            offset += done.value


def _read_file(path: Path, field: str, skip: int) -> Generator[str, None, int]:
    """Yield a file's documents after the first ``skip``; return how many it has in all."""
    suffix = file_suffix(path)
    try:
        if suffix in TEXT_SUFFIXES:
            return (yield from _read_text(path, skip))
        if suffix in JSONL_SUFFIXES or suffix in (".json", ".parquet"):
            return (yield from _read_rows(path, field, skip))
    except OSError as exc:  # unreadable, not gzip, a broken link...
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except (EOFError, zlib.error) as exc:  # a truncated or corrupt .gz
        raise UserError(f"{path}: cannot be read (corrupt compressed data: {exc})") from None
    raise UserError(f"{path}: unsupported file type {suffix or '(no suffix)'!r} "
                    f"(use {', '.join(DOCUMENT_SUFFIXES)}, or a folder of them)")


class _Utf8Lines:
    """The lines of a (possibly gzipped) text file, decoded strictly: a byte that is not UTF-8
    is one ``UserError`` naming the file and the byte offset, not a silent replacement character."""

    def __init__(self, path: Path) -> None:
        self.path = path
        gz = path.name.lower().endswith(".gz")
        self._fh: IO[bytes] = gzip.open(path, "rb") if gz else path.open("rb")
        self._where = " of the decompressed text" if gz else ""

    def __enter__(self) -> _Utf8Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def __iter__(self) -> Iterator[str]:
        offset = 0
        for raw in self._fh:
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{self.path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset "
                                f"{offset + e.start}{self._where})") from None
            offset += len(raw)


def _open_text(path: Path) -> _Utf8Lines:
    return _Utf8Lines(path)


def decode_utf8(path: Path, data: bytes) -> str:
    """``data`` (the bytes of ``path``) as text, or one line with the offending byte's offset."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None


def _blocks(path: Path, blank_lines: int) -> Iterator[str]:
    """Stripped blocks of text separated by at least ``blank_lines`` blank lines, streamed."""
    lines: list[str] = []
    blanks = 0
    with _open_text(path) as fh:
        for line in fh:
            if not line.strip():
                blanks += 1
            else:
                if blanks >= blank_lines and lines:
                    yield "".join(lines).strip()
                    lines = []
                blanks = 0
            if lines or blanks == 0:  # leading blank lines are dropped
                lines.append(line)
    tail = "".join(lines).strip()
    if tail:
        yield tail


def _read_text(path: Path, skip: int) -> Generator[str, None, int]:
    # fewer than two blocks at two blank lines: fall back to paragraphs (one blank line)
    blank_lines = 2 if sum(1 for _ in islice(_blocks(path, 2), 2)) == 2 else 1
    n = 0
    for block in _blocks(path, blank_lines):
        if n >= skip:
            yield block
        n += 1
    return n


def iter_rows(path: Path, *, skip: int = 0, columns: list[str] | None = None,
              ) -> Generator[tuple[str, Any], None, int]:
    """Yield ``(where, row)`` for the rows of a .jsonl/.ndjson/.jsonl.gz, .json (a list) or
    .parquet file after the first ``skip``, ``where`` naming the file (and line) for
    errors; return how many rows the file has. Rows are parsed JSON values (objects,
    unless the file is odd; callers check). ``columns`` limits what parquet reads. Also
    the reader of multiple-choice items (``evals.mc``)."""
    suffix = file_suffix(path)
    if suffix in JSONL_SUFFIXES:
        return (yield from _jsonl_rows(path, skip))
    if suffix == ".json":
        try:
            data = json.loads(decode_utf8(path, path.read_bytes()))
        except RecursionError:
            raise UserError(f"{path}: JSON nested too deeply to read") from None
        except json.JSONDecodeError as exc:
            if exc.msg == "Extra data":  # JSON lines in a .json file
                return (yield from _jsonl_rows(path, skip))
            raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a JSON list of rows, got a {type(data).__name__}")
        for n in range(skip, len(data)):
            yield str(path), data[n]
        return len(data)
    if suffix == ".parquet":
        return (yield from _parquet_rows(path, skip, columns))
    raise UserError(f"{path}: unsupported file type {suffix or '(no suffix)'!r} (use .jsonl, .json or .parquet)")


def _jsonl_rows(path: Path, skip: int) -> Generator[tuple[str, Any], None, int]:
    n = 0
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if n >= skip:  # rows before ``skip`` are counted, not parsed
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
                except RecursionError:
                    raise UserError(f"{path}:{lineno}: JSON nested too deeply to read") from None
                yield f"{path}:{lineno}", row
            n += 1
    return n


def _parquet_rows(path: Path, skip: int, columns: list[str] | None) -> Generator[tuple[str, Any], None, int]:
    try:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - any reader error is a bad file
        raise UserError(f"{path}: cannot read parquet ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
    names = pf.schema_arrow.names
    missing = [c for c in columns or () if c not in names]
    if missing:
        raise UserError(f"{path}: no {missing[0]!r} field (fields: {', '.join(names) or 'none'})")
    n = 0
    for g in range(pf.num_row_groups):
        rows = pf.metadata.row_group(g).num_rows
        if n + rows <= skip:  # whole row groups before ``skip`` are not read
            n += rows
            continue
        for batch in pf.iter_batches(batch_size=1024, row_groups=[g], columns=columns):
            for row in batch.to_pylist():
                if n >= skip:
                    yield str(path), row
                n += 1
    return n


def _read_rows(path: Path, field: str, skip: int) -> Generator[str, None, int]:
    rows = iter_rows(path, skip=skip, columns=[field])
    n = skip
    try:
        while True:
            where, row = next(rows)
            yield _row_text(row, field, where, n)
            n += 1
    except StopIteration as done:
        return done.value


def _row_text(row: Any, field: str, where: str, n: int) -> str:
    if not isinstance(row, dict):
        raise UserError(f"{where}: row {n} is a {type(row).__name__}, not an object with a {field!r} field")
    if field not in row:
        raise UserError(f"{where}: row {n} has no {field!r} field (fields: {', '.join(map(str, row)) or 'none'})")
    return _as_text(row[field], field, where, n)


def _as_text(value: Any, field: str, where: str, n: int) -> str:
    if value is None:  # a null keeps its index as an empty document
        return ""
    if not isinstance(value, str):
        raise UserError(f"{where}: row {n} field {field!r} is a {type(value).__name__}, not text")
    return value


# ---------------------------------------------------------------- Hugging Face hub


def _hub_error(name: str, split: str, exc: Exception) -> UserError:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return UserError(f"dataset {name!r} (split {split!r}) cannot be opened: {type(exc).__name__}: {first}",
                     hint="offline? give a local .txt/.jsonl/.parquet file or folder, or 'builtin'")


def _iter_hub(ref: str, split: str, field: str, start: int) -> Iterator[tuple[int, str]]:
    """Stream a hub dataset's rows; network errors (opening or mid-stream) become one line."""
    name, _, config = ref.partition(":")
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise UserError(f"dataset {name!r}: the 'datasets' package is needed for hub datasets") from None
    try:
        ds = datasets.load_dataset(name, config or None, split=split, streaming=True)
        rows = iter(ds.skip(start) if start else ds)
    except Exception as exc:  # noqa: BLE001 - offline, missing, gated...: all one line
        raise _hub_error(name, split, exc) from exc
    where = f"dataset {name!r}"
    for i in count(start):
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001
            raise _hub_error(name, split, exc) from exc
        yield i, _row_text(row, field, where, i)
