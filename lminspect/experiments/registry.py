"""Finding experiments through the ``lminspect.experiments`` entry-point group.

Listing reads metadata only (name, distribution, version, summary); a plugin's code
runs only when it is asked for. ``LMINSPECT_LOAD_PLUGINS=0`` (or empty) hides
third-party plugins; the built-ins are always there.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

GROUP = "lminspect.experiments"
_BUILTIN_PREFIX = "lminspect.experiments."


@dataclass
class ExperimentInfo:
    name: str
    target: str  # "module:attribute" the entry point resolves to
    dist: str  # distribution that declared it
    version: str
    summary: str
    builtin: bool
    error: str | None = None  # set when the plugin cannot be imported

    @property
    def broken(self) -> bool:
        return self.error is not None


def plugins_enabled(flag: bool | None = None) -> bool:
    """Third-party plugins load unless ``flag`` is False or LMINSPECT_LOAD_PLUGINS is empty/0."""
    if flag is not None:
        return flag
    val = os.environ.get("LMINSPECT_LOAD_PLUGINS")
    if val is None:
        return True
    return val.strip().lower() not in ("", "0", "false", "no", "off")


def _is_builtin(ep: EntryPoint) -> bool:
    return ep.value.startswith(_BUILTIN_PREFIX)


_warned: set[tuple[str, str]] = set()


def _entry_points(load_plugins: bool | None) -> list[EntryPoint]:
    seen: dict[str, EntryPoint] = {}
    plugins = plugins_enabled(load_plugins)
    eps = [ep for ep in entry_points(group=GROUP) if plugins or _is_builtin(ep)]
    # built-ins first: a plugin never replaces one; then the first declaration wins (sys.path
    # order), as for console scripts; every declaration left out is said once, in one line
    for ep in sorted(eps, key=lambda e: not _is_builtin(e)):
        kept = seen.setdefault(ep.name, ep)
        if kept is not ep and kept.value != ep.value and (ep.name, ep.value) not in _warned:
            _warned.add((ep.name, ep.value))
            import sys

            what = "the built-in experiment" if _is_builtin(kept) else f"the first declaration ({kept.value})"
            print(f"lminspect: warning: plugin experiment {ep.name!r} ({ep.value}) ignored: {what} of that name "
                  "is used", file=sys.stderr)
    return sorted(seen.values(), key=lambda e: (not _is_builtin(e), e.name))


def _dist(ep: EntryPoint) -> tuple[str, str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?", "?", ""
    try:
        summary = dist.metadata.get("Summary") or ""
    except Exception:  # noqa: BLE001 - odd metadata must not break listing
        summary = ""
    return dist.name, dist.version, summary


def _load(ep: EntryPoint) -> Any:
    try:  # a plugin calling sys.exit() while importing is a broken plugin, not the end of the command
        obj = ep.load()
        if callable(obj) and not hasattr(obj, "model_factory"):
            obj = obj()
    except SystemExit as e:
        raise ImportError(f"{ep.value} called sys.exit({e.code!r})") from None
    if not hasattr(obj, "model_factory") or not hasattr(obj, "name"):
        raise TypeError(f"{ep.value} is not an lminspect Experiment")
    return obj


def list_experiments(load_plugins: bool | None = None, check: bool = False) -> list[ExperimentInfo]:
    """All registered experiments, built-ins first.

    Plugins are not imported unless ``check``; a plugin whose top-level module cannot
    be found is flagged without importing it. With ``check`` each plugin is imported
    and any exception is recorded in ``error`` (never raised).
    """
    out: list[ExperimentInfo] = []
    for ep in _entry_points(load_plugins):
        dist, version, summary = _dist(ep)
        builtin = _is_builtin(ep)
        error = None
        if builtin:
            try:
                exp = _load(ep)
                summary = exp.summary
                if exp.unavailable:
                    error = f"not available yet: {exp.unavailable}"
            except Exception as e:  # noqa: BLE001
                error = f"{type(e).__name__}: {e}"
        else:
            top = ep.value.split(":")[0].split(".")[0]
            try:
                found = importlib.util.find_spec(top) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                error = f"module {top!r} not found"
            elif check:
                try:
                    exp = _load(ep)
                    summary = exp.summary or summary
                except Exception as e:  # noqa: BLE001 - a broken plugin is reported, not raised
                    error = f"{type(e).__name__}: {e}"
        out.append(ExperimentInfo(ep.name, ep.value, dist, version, summary, builtin, error))
    return out


def experiment_names(load_plugins: bool | None = None) -> list[str]:
    return [ep.name for ep in _entry_points(load_plugins)]


def get_experiment(name: str, load_plugins: bool | None = None):
    """Import and return one experiment; unknown or broken ones raise a one-line UserError."""
    from lminspect.errors import UserError

    eps = {ep.name: ep for ep in _entry_points(load_plugins)}
    ep = eps.get(name)
    if ep is None:
        known = ", ".join(eps) or "(none)"
        raise UserError(f"unknown experiment {name!r}; known experiments: {known}")
    try:
        return _load(ep)
    except Exception as e:  # noqa: BLE001
        dist, version, _ = _dist(ep)
        raise UserError(
            f"experiment {name!r} (from {dist} {version}) failed to import: {type(e).__name__}: {e}"
        ) from e
