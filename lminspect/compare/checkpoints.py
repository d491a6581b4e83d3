"""Opening a model reference that may be a run directory (``RUN``, ``RUN@STEP``, ``RUN@first``,
``RUN@last``). What a run and its checkpoints are is ``lminspect.rundir``'s (re-exported here for
the comparisons that read them)."""

from __future__ import annotations

from typing import Any

from lminspect.rundir import Checkpoint, list_checkpoints, pick_checkpoint, resolve_ref

__all__ = ["Checkpoint", "list_checkpoints", "open_ref", "pick_checkpoint", "resolve_ref"]


def open_ref(ref: str | Any) -> Any:
    """A TensorStore for a model reference (see ``rundir.resolve_ref``)."""
    from lminspect.weights import open_store

    return open_store(resolve_ref(ref))
