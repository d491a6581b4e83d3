"""Build a cloze multiple-choice set (HellaSwag format) from any text corpus.

HellaSwag itself needs the hub; this makes an offline stand-in that asks the same
question (does the model prefer the true continuation?). Documents are split into
sentences; an item's ``ctx`` is a few consecutive sentences, the true ending is the
next sentence, and the distractors are sentences from *other* documents, chosen with a
similar length so that length alone gives nothing away. The right answer's position is
drawn at random. Same corpus + same seed = same file. Corpora are read by
:func:`lminspect.documents.read_documents` (re-exported here); ``builtin`` is the EB1911 article.
:func:`builtin_cloze` is the set ``--eval cloze``, ``m.eval_mc("cloze")`` and ``m.sweep("cloze")`` score.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lminspect.documents import read_documents  # re-exported for callers
from lminspect.errors import UserError

if TYPE_CHECKING:
    from lminspect.evals.mc import MCItem

__all__ = ["builtin_cloze", "make_cloze", "read_documents", "split_sentences", "write_jsonl"]

_ABBREV = {"mr", "mrs", "ms", "dr", "st", "sr", "jr", "vs", "etc", "e.g", "i.e", "cf", "vol", "no", "pp", "ed",
           "eds", "viz", "ch", "sc", "act", "fig", "col", "ibid", "op", "cit", "ff", "c", "v", "p", "b", "d", "f"}
_SPLIT_RE = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z])")


def split_sentences(text: str) -> list[str]:
    """Sentence split on ``. ! ?`` followed by a capital, not after common abbreviations or initials."""
    text = re.sub(r"\s+", " ", text).strip()
    out: list[str] = []
    start = 0
    for m in _SPLIT_RE.finditer(text):
        before = text[start : m.start()].rstrip("\"')]")
        word = before.rsplit(" ", 1)[-1].rstrip(".!?").lower()
        if before.endswith(".") and (word in _ABBREV or (len(word) == 1 and word.isalpha())):
            continue
        out.append(text[start : m.start()].strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return [s for s in out if s]


def _prose(s: str, ratio: float = 0.85) -> bool:
    """Mostly letters and spaces (OCR junk, tables and references are not)."""
    return len(s) >= 10 and sum(c.isalpha() or c == " " for c in s) / len(s) >= ratio


def _clean_sentence(s: str) -> bool:
    """Reasonable prose: 25-300 characters, mostly letters, ends like a sentence (drops OCR junk)."""
    return 25 <= len(s) <= 300 and s[-1] in ".!?\"')" and _prose(s, 0.88)


def make_cloze(docs: Iterable[str], *, n: int = 200, seed: int = 0, ctx_sentences: int = 3,
               n_choices: int = 4) -> list[dict[str, Any]]:
    """``n`` HellaSwag-format rows ``{id, ctx, endings, label, doc}`` (see the module docstring)."""
    if n < 1:
        raise UserError(f"--n must be >= 1, got {n}")
    if n_choices < 2:
        raise UserError(f"need at least 2 choices, got {n_choices}")
    if ctx_sentences < 1:
        raise UserError(f"need at least 1 context sentence, got {ctx_sentences}")
    rng = random.Random(seed)
    sents = [split_sentences(d) for d in docs]
    # candidate positions: ctx_sentences clean-ish sentences, then a clean ending
    cands = [(d, i) for d, ss in enumerate(sents) for i in range(ctx_sentences, len(ss)) if _clean_sentence(ss[i])
             and all(_prose(s) for s in ss[i - ctx_sentences : i])]
    pool = [(d, s) for d, ss in enumerate(sents) for s in ss if _clean_sentence(s)]
    n_docs = len({d for d, _ in pool})
    if n_docs < 2:
        raise UserError("the corpus needs at least two documents with usable sentences (distractors come from "
                        "other documents)")
    if len(cands) < n:
        raise UserError(f"the corpus yields only {len(cands)} cloze items, fewer than --n {n}")
    by_len = sorted(range(len(pool)), key=lambda k: len(pool[k][1]))
    lens = [len(pool[k][1]) for k in by_len]
    import bisect

    rows = []
    for k, (d, i) in enumerate(rng.sample(cands, n)):
        true = sents[d][i]
        # distractors: other documents, length within a window around the true ending's length
        lo = bisect.bisect_left(lens, int(len(true) * 0.7))
        hi = bisect.bisect_right(lens, int(len(true) * 1.4) + 1)
        window = [by_len[j] for j in range(lo, hi) if pool[by_len[j]][0] != d and pool[by_len[j]][1] != true]
        if len(set(pool[j][1] for j in window)) < n_choices - 1:
            window = [j for j in range(len(pool)) if pool[j][0] != d and pool[j][1] != true]
        picked: list[str] = []
        for j in rng.sample(window, len(window)):
            s = pool[j][1]
            if s not in picked:
                picked.append(s)
            if len(picked) == n_choices - 1:
                break
        if len(picked) < n_choices - 1:
            raise UserError("the corpus has too few distinct sentences in other documents for distractors")
        label = rng.randrange(n_choices)
        endings = picked[:label] + [true] + picked[label:]
        rows.append({"id": f"cloze-{seed}-{k}", "ctx": " ".join(sents[d][i - ctx_sentences : i]),
                     "endings": endings, "label": label, "doc": d})
    return rows


def builtin_cloze(n: int = 50, *, seed: int = 0) -> list[MCItem]:
    """The cloze set from the shipped eval corpus, as scoring items (``"cloze"`` in the CLI and the REPL)."""
    from lminspect.evals.mc import hellaswag_item

    return [hellaswag_item(r, k) for k, r in enumerate(make_cloze(read_documents("builtin:eval"), n=n, seed=seed))]


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write rows as JSON lines, atomically."""
    from lminspect.fsutil import atomic_write_text

    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    atomic_write_text(path, text)
    return Path(path)
