"""Hook sites of a forward: what a hooked forward records or calls (see docs/engine.md, Hooks)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from lminspect.errors import UserError
from lminspect.models.sites import SITE_KINDS, site_name

_NAMED_ONLY = ("attn_probs", "attn_z")  # kinds a hook sees only when it names them

HookCallback = Callable[[str, torch.Tensor], "torch.Tensor | None"]


class _Hooks:
    """What a hooked forward records / calls. ``wants(kind, pos)`` is asked only when hooks exist."""

    def __init__(self, sites: set[str] | None, kinds: set[str] | None,
                 callback: HookCallback | None, store: dict[str, torch.Tensor] | None) -> None:
        self.sites = sites  # exact "{kind}.{pos}" names, or None for "kind-only" matching below
        self.kinds = kinds  # kinds requested for every position (None: all kinds but attn_probs and attn_z)
        self.callback = callback
        self.store = store

    def wants(self, kind: str, pos: int) -> bool:
        if self.kinds is None and self.sites is None:
            return kind not in _NAMED_ONLY
        if self.kinds is not None and kind in self.kinds:
            return True
        return self.sites is not None and site_name(kind, pos) in self.sites

    def emit(self, kind: str, pos: int, t: torch.Tensor) -> torch.Tensor:
        if not self.wants(kind, pos):
            return t
        name = site_name(kind, pos)
        if self.callback is not None:
            out = self.callback(name, t)
            if out is not None:
                t = out
        if self.store is not None:
            self.store[name] = t.detach()
        return t


def _parse_sites(sites: Iterable[str] | None) -> tuple[set[str] | None, set[str] | None]:
    if sites is None:
        return None, None
    if isinstance(sites, str):
        sites = [sites]
    exact: set[str] = set()
    kinds: set[str] = set()
    for s in sites:
        kind, _, pos = s.partition(".")
        if kind not in SITE_KINDS:
            raise UserError(f"unknown hook site {s!r} (expected KIND or KIND.POS with KIND one of {', '.join(SITE_KINDS)})")
        if pos:
            if not pos.isdigit():
                raise UserError(f"bad hook site {s!r}: the position after the dot must be an integer")
            exact.add(site_name(kind, int(pos)))
        else:
            kinds.add(kind)
    return exact, kinds
