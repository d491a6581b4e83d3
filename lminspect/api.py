"""The REPL API behind ``import lminspect as li`` (grown by the REPL issue).

For now ``li.open`` returns the lazy TensorStore of ``lminspect.weights``.
"""

from __future__ import annotations

from typing import Any


def open(path: str, **kwargs: Any):  # noqa: A001 - mirrors the builtin on purpose: li.open(path)
    from lminspect.weights import open_store

    return open_store(path, **kwargs)
