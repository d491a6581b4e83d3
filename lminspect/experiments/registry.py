"""Finding experiments through the ``lminspect.experiments`` entry-point group.

Listing reads metadata only (name, distribution, version, summary); a plugin's code
runs only when it is asked for. ``LMINSPECT_LOAD_PLUGINS=0`` (or empty) hides
third-party plugins; the built-ins are always there.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from typing import Any

from lminspect.experiments.plugins import (  # noqa: F401 - plugins_enabled is re-exported
    PluginError,
    broken_plugin_error,
    is_builtin,
    load_plugin,
    plugin_entry_points,
    plugins_enabled,
)

GROUP = "lminspect.experiments"


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


def _entry_points(load_plugins: bool | None) -> list[EntryPoint]:
    return plugin_entry_points(GROUP, load_plugins)


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
    obj = load_plugin(ep)
    if callable(obj) and not hasattr(obj, "model_factory"):
        try:  # a factory: its failure is the plugin's too
            obj = obj()
        except SystemExit as e:
            raise PluginError(f"{ep.value} called sys.exit({e.code!r})") from None
        except Exception as e:  # noqa: BLE001
            raise PluginError(f"{type(e).__name__}: {e}") from e
    if not hasattr(obj, "model_factory") or not hasattr(obj, "name"):
        raise PluginError(f"TypeError: {ep.value} is not an lminspect Experiment")
    return obj


def _why(e: BaseException) -> str:
    return str(e) if isinstance(e, PluginError) else f"{type(e).__name__}: {e}"


def list_experiments(load_plugins: bool | None = None, check: bool = False) -> list[ExperimentInfo]:
    """All registered experiments, built-ins first.

    Plugins are not imported unless ``check``; a plugin whose top-level module cannot
    be found is flagged without importing it. With ``check`` each plugin is imported
    and any exception is recorded in ``error`` (never raised).
    """
    out: list[ExperimentInfo] = []
    for ep in _entry_points(load_plugins):
        dist, version, summary = _dist(ep)
        builtin = is_builtin(ep)
        error = None
        if builtin:
            try:
                exp = _load(ep)
                summary = exp.summary
                if exp.unavailable:
                    error = f"not available yet: {exp.unavailable}"
            except Exception as e:  # noqa: BLE001
                error = _why(e)
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
                    error = _why(e)
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
        raise broken_plugin_error("experiment", ep, _why(e)) from e
