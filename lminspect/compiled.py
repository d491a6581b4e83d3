"""Optional numba kernels: one loader for every compiled module (statistics scan, packed matvec).

numba is an optional extra; a missing numba, or one that cannot compile a kernel module, means
the caller's numpy/torch fallback, with a warning in the second case.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Literal


def load_kernels(module: str, warm_up: Callable[[ModuleType], object], what: str,
                 fallback: str) -> ModuleType | Literal[False]:
    """Import and warm up ``module`` (compiling or loading its cached kernels); False without numba
    or when it cannot compile them. Callers cache the result (``_KERNELS``: None = not tried yet)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    try:
        mod = importlib.import_module(module)
        warm_up(mod)
        return mod
    except Exception as e:  # a numba that cannot compile these: the fallback path
        warnings.warn(f"lminspect: compiled {what} kernels unavailable ({e}); using {fallback}",
                      RuntimeWarning, stacklevel=3)
        return False
