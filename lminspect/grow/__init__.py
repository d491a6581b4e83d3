"""Growing models (seed 003, "building babel"): function-preserving depth / width / head / ffn /
vocab growth (:mod:`lminspect.grow.core`), on disk (:mod:`lminspect.grow.io`, ``lminspect grow``)
and while training (:mod:`lminspect.grow.schedule`, used by the ``growing`` experiment in
:mod:`lminspect.experiments.builtin`).

Importing this package is cheap (torch loads inside the functions).
"""

from __future__ import annotations

from lminspect.grow.core import GrowSpec, ParamMap, grow_model, parse_layers

__all__ = ["GrowSpec", "ParamMap", "grow_model", "parse_layers"]
