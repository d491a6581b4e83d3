"""Growing models (seed 003, "building babel"): function-preserving depth / width / head / ffn /
vocab growth (:mod:`lminspect.grow.core`), on disk (:mod:`lminspect.grow.io`, ``lminspect grow``)
and while training (:mod:`lminspect.grow.schedule`, the ``growing`` experiment).

Importing this package is cheap (torch loads inside the functions).
"""

from __future__ import annotations

from typing import Any

from lminspect.grow.core import GrowSpec, ParamMap, grow_model, parse_layers

__all__ = ["GrowSpec", "ParamMap", "grow_model", "growing_experiment", "parse_layers"]


def growing_experiment() -> Any:
    """The ``growing`` built-in experiment (see :mod:`lminspect.grow.schedule`)."""
    from lminspect.grow.schedule import growing_experiment as make

    return make()
