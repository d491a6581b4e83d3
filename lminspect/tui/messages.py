"""Messages that workers post back to the UI thread (``post_message`` is thread-safe)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


@dataclass
class StoreOpened(Message):
    """A model's TensorStore is open (headers read); the tabs can show it."""

    ref: str
    store: Any


@dataclass
class TensorComputed(Message):
    """Statistics and figures data for one tensor are ready (or failed: ``error``)."""

    name: str
    result: dict[str, Any]


@dataclass
class StatsProgress(Message):
    """A stage of a fresh statistics computation (``store.stats``'s ``progress`` callback).

    ``job`` is the number of the selection that started it; a stage from a superseded
    selection is dropped."""

    name: str
    job: int
    stage: str


@dataclass
class GenerationPiece(Message):
    """A streamed text piece for one output column (``"plan"`` or ``"baseline"``)."""

    column: str
    text: str


@dataclass
class GenerationStatus(Message):
    """A status line for the Stitch tab (loading, tok/s, done, stopped)."""

    text: str
    done: bool = False


@dataclass
class RunsLoaded(Message):
    """Loaded run objects (from ``load_run``), keyed by directory."""

    runs: dict[str, Any]
    errors: dict[str, str]
