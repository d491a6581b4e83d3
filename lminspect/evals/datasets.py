"""Multiple-choice sets by name: the one place ``"cloze"``, a file, a hub id or rows become items.

``mc_items(data, limit=..., split=...)`` is what ``stitch sweep --eval``, ``Model.eval_mc`` and
``Model.sweep`` call:

- ``"cloze"``: built from the shipped eval corpus (``evals.cloze.builtin_cloze``), ``limit`` items
  (default ``DEFAULT_LIMIT``: the set is made to measure, so it needs a size);
- a ``.jsonl`` / ``.json`` / ``.parquet`` file or a HF dataset id (``Rowan/hellaswag``):
  ``evals.mc.load_mc``, the first ``limit`` items (all when None);
- rows (dicts) or ready ``MCItem`` objects: the first ``limit``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lminspect.evals.mc import MCItem

DEFAULT_LIMIT = 50  # items of a made-to-measure set ("cloze"), and the CLI's --limit
NAMED = {"cloze": "built from the shipped eval corpus (lminspect.evals.cloze)"}


def mc_items(data: str | Path | Sequence[Any], *, limit: int | None = None,
             split: str | None = None) -> list[MCItem]:
    """The items of a multiple-choice set named by ``data`` (see the module docstring)."""
    if isinstance(data, str) and data == "cloze":
        from lminspect.evals.cloze import builtin_cloze

        return builtin_cloze(limit or DEFAULT_LIMIT)
    if isinstance(data, list | tuple) and data and hasattr(data[0], "endings"):
        return list(data)[:limit] if limit is not None else list(data)
    from lminspect.evals.mc import load_mc

    return load_mc(data, limit=limit, split=split)


__all__ = ["DEFAULT_LIMIT", "NAMED", "mc_items"]
