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
    job: int = 0  # the selection's number: one from before the current model opened is dropped


@dataclass
class StatsProgress(Message):
    """A stage of a fresh statistics computation (``store.stats``'s ``progress`` callback).

    ``job`` is the number of the selection that started it; a stage from a superseded
    selection is dropped."""

    name: str
    job: int
    stage: str


@dataclass
class GroupProgress(Message):
    """A step of a group overview's statistics (Weights tab, a group node selected): tensor
    ``index`` of ``total`` (1-based, counting those already in memory) is ``name``;
    ``stats`` is None when it starts, its statistics when done (``error``: why there are
    none). ``job`` is the selection's number; a step of a superseded selection is dropped."""

    job: int
    index: int
    total: int
    name: str
    stats: dict[str, Any] | None = None
    error: str = ""


@dataclass
class GroupDone(Message):
    """A group overview's statistics are all computed (not posted when cancelled)."""

    job: int


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


@dataclass
class ActsFound(Message):
    """Activation results directories found under paths (``--acts``, or typed in the tab).

    ``entries``: ``(directory, index.json contents)``; ``errors``: one line per bad path;
    ``typed``: the paths came from the tab's path field (not the command line)."""

    entries: list[tuple[str, dict[str, Any]]]
    errors: list[str]
    typed: bool = False


@dataclass
class ActsLoaded(Message):
    """Loaded activation results (``ActsResult`` by directory), load errors by directory, and
    diffs: ``(a, b) -> rows`` or an error line."""

    results: dict[str, Any]
    errors: dict[str, str]
    diffs: dict[tuple[str, str], Any]


@dataclass
class ModelIdentity(Message):
    """``model_identity(store)`` of the open model (None when it cannot be computed)."""

    identity: dict[str, Any] | None
