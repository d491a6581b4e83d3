"""Experiments: named model recipes that ``lminspect train --exp NAME`` can train.

An experiment is an :class:`Experiment` object exposed through the entry-point
group ``lminspect.experiments`` (the built-ins are registered there too, in
lminspect's own pyproject). Listing experiments reads entry-point metadata only;
a plugin's code is imported when it is described or trained, so a broken or slow
plugin never takes ``lminspect exp list`` down.
"""

from __future__ import annotations

from lminspect import _make_callable
from lminspect.experiments.base import Experiment, export_state_dict
from lminspect.experiments.registry import (
    ExperimentInfo,
    experiment_names,
    get_experiment,
    list_experiments,
    plugins_enabled,
)

# also the REPL function li.experiments(...) (see lminspect._make_callable)
_make_callable(__name__)

__all__ = [
    "Experiment",
    "ExperimentInfo",
    "experiment_names",
    "export_state_dict",
    "get_experiment",
    "list_experiments",
    "plugins_enabled",
]
