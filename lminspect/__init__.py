"""lminspect: a terminal workbench for taking small language models apart.

The REPL surface (``import lminspect as li``). Everything is imported lazily so
``import lminspect`` and ``lminspect --help`` stay fast and pull in neither torch
nor textual until a function that needs them is called.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
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


def lazy_exports(module_name: str, table: dict[str, str], made: dict[str, Callable[[], Any]] | None = None
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` (PEP 562) for a package whose public names load on first use, so
    importing it pulls in nothing heavy: ``table`` maps a name to ``"module:attribute"`` (or just
    ``"module"``: the same name there), ``made`` to a function that makes the value. Each value is
    stored on the package once resolved, so later lookups are plain."""
    module = sys.modules[module_name]

    def __getattr__(name: str) -> Any:
        if made is not None and name in made:
            value = made[name]()
        elif name in table:
            home, _, attr = table[name].partition(":")
            value = getattr(importlib.import_module(home), attr or name)
        else:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(table) | set(made or ()))

    return __getattr__, __dir__


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


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
