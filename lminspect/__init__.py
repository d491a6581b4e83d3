"""lminspect: a terminal workbench for taking small language models apart.

The REPL surface (``import lminspect as li``). Everything is imported lazily so
``import lminspect`` and ``lminspect --help`` stay fast and pull in neither torch
nor textual until a function that needs them is called.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

# public name -> "module:attribute"; resolved on first use
_LAZY = {
    "open": "lminspect.api:open",
    "Model": "lminspect.api:Model",
    "runs": "lminspect.api:runs",
    "experiments": "lminspect.api:experiments",
    "activations": "lminspect.api:activations",
    "Table": "lminspect.api:Table",
    "quick_model": "lminspect.api:quick_model",
    "parse_plan": "lminspect.stitch:parse_plan",
    "describe_plan": "lminspect.stitch:describe_plan",
    "StitchedModel": "lminspect.stitch:StitchedModel",
    "load_model": "lminspect.models:load_model",
    "open_store": "lminspect.weights:open_store",
    "UserError": "lminspect.errors:UserError",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'lminspect' has no attribute {name!r}")
    module_name, attr = target.split(":")
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


class _CallableSubpackage(types.ModuleType):
    """A subpackage that is also the REPL function of the same name.

    ``lminspect.experiments`` and ``lminspect.activations`` are packages *and*
    ``li.experiments()`` / ``li.activations(DIR)``. Importing a subpackage always
    rebinds the parent's attribute to the module, so the module itself forwards
    calls to ``lminspect.api``; ``li.activations.collect`` still reaches the package.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        api = importlib.import_module("lminspect.api")
        return getattr(api, self.__name__.rsplit(".", 1)[1])(*args, **kwargs)


def _make_callable(module_name: str) -> None:
    """Called by such a subpackage's ``__init__`` with its own ``__name__``."""
    sys.modules[module_name].__class__ = _CallableSubpackage


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
