"""Third-party plugins through entry points: one loader and one failure policy for every group
(``lminspect.experiments``, ``lminspect.metrics``).

- ``LMINSPECT_LOAD_PLUGINS=0`` (or empty) hides third-party plugins; built-ins (entry points
  inside ``lminspect``) are always there. A name declared twice: the first declaration wins
  (``sys.path`` order), as for console scripts.
- Loading runs the plugin's code; anything it raises, ``sys.exit()`` included, becomes a
  ``PluginError`` naming the plugin. The policy: a plugin asked for by name that fails is a
  one-line ``UserError``; one met while enumerating (a list, the available metrics) is reported
  (a warning line, or the list's "broken" column) and skipped, never the end of the command.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from lminspect.errors import UserError

ENV = "LMINSPECT_LOAD_PLUGINS"
_BUILTIN_PREFIX = "lminspect."


class PluginError(Exception):
    """A plugin that could not be loaded (the message says which and why)."""


def plugins_enabled(flag: bool | None = None) -> bool:
    """Third-party plugins load unless ``flag`` is False or LMINSPECT_LOAD_PLUGINS is empty/0."""
    if flag is not None:
        return flag
    val = os.environ.get(ENV)
    if val is None:
        return True
    return val.strip().lower() not in ("", "0", "false", "no", "off")


def is_builtin(ep: EntryPoint) -> bool:
    return ep.value.startswith(_BUILTIN_PREFIX)


def plugin_entry_points(group: str, load_plugins: bool | None = None) -> list[EntryPoint]:
    """The group's entry points, built-ins first then by name; third-party ones only when enabled."""
    seen: dict[str, EntryPoint] = {}
    plugins = plugins_enabled(load_plugins)
    eps = [ep for ep in entry_points(group=group) if plugins or is_builtin(ep)]
    # built-ins first: a plugin never replaces one; then the first declaration wins (sys.path
    # order), as for console scripts; every declaration left out is said once, in one line
    for ep in sorted(eps, key=lambda e: not is_builtin(e)):
        kept = seen.setdefault(ep.name, ep)
        if kept is not ep and kept.value != ep.value and (group, ep.name, ep.value) not in _warned:
            _warned.add((group, ep.name, ep.value))
            what = "the built-in one" if is_builtin(kept) else f"the first declaration ({kept.value})"
            print(f"lminspect: warning: plugin {ep.name!r} ({ep.value}) in {group} ignored: {what} of that name "
                  "is used", file=sys.stderr)
    return sorted(seen.values(), key=lambda e: (not is_builtin(e), e.name))


_warned: set[tuple[str, str, str]] = set()


def load_plugin(ep: EntryPoint) -> Any:
    """The object an entry point names; ``PluginError`` (naming the plugin) when loading fails."""
    try:  # a plugin calling sys.exit() while importing is a broken plugin, not the end of the command
        return ep.load()
    except SystemExit as e:
        raise PluginError(f"{ep.value} called sys.exit({e.code!r})") from None
    except Exception as e:  # noqa: BLE001 - whatever a plugin raises is the plugin's failure
        raise PluginError(f"{type(e).__name__}: {e}") from e


def broken_plugin_error(kind: str, ep: EntryPoint, err: BaseException) -> UserError:
    """The one line for a plugin asked for by name that failed to load."""
    dist = getattr(ep, "dist", None)
    origin = f" (from {dist.name} {dist.version})" if dist is not None else f" ({ep.value})"
    return UserError(f"{kind} {ep.name!r}{origin} failed to import: {err}")


def warn_broken_plugin(kind: str, ep: EntryPoint, err: BaseException) -> None:
    """The warning line for a plugin met while enumerating (it is skipped)."""
    print(f"lminspect: warning: {kind} plugin {ep.name} ({ep.value}) failed to load: {err}", file=sys.stderr)


__all__ = ["ENV", "PluginError", "broken_plugin_error", "is_builtin", "load_plugin", "plugin_entry_points",
           "plugins_enabled", "warn_broken_plugin"]
