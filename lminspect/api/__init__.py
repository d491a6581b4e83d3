"""The REPL API behind ``import lminspect as li``: models, tensors, runs, experiments.

``li.open(ref)`` gives a :class:`Model` (lazy weights + engine on first use); ``li.runs(dir)``
a :class:`Runs` collection; ``li.experiments()`` and ``m.stats()`` give :class:`Table` objects
that print as tables and export to lists, CSV, JSON and pandas. See docs/api.md.
"""

from __future__ import annotations

from lminspect.api.model import (
    Activations,
    Completion,
    Layers,
    Model,
    Node,
    Tensor,
    Tensors,
    TensorStats,
    open,
)
from lminspect.api.quick import quick_model
from lminspect.api.runs import Runs, activations, experiments, runs
from lminspect.api.table import Figure, Table

__all__ = [
    "Activations", "Completion", "Figure", "Layers", "Model", "Node", "Runs", "Table", "Tensor", "TensorStats",
    "Tensors", "activations", "experiments", "open", "quick_model", "runs",
]
