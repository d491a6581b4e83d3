"""Resource caps: estimate before allocating, refuse with the estimate and the limit.

One user file or flag must not exhaust memory or disk (a plan ``0r99999999999``, a config
claiming a billion layers, ``--seq-len 100000000``). Each cap compares an estimate with what the
machine has (or a fixed sanity bound) and raises one ``UserError`` line saying both numbers.
``LMINSPECT_NO_LIMITS=1`` lifts every cap for users who know better.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lminspect.errors import UserError
from lminspect.fsutil import human_bytes

ENV = "LMINSPECT_NO_LIMITS"
MAX_PLAN_CALLS = 10_000  # layer calls in one plan; seed 002's deepest plans have ~100
MAX_LAYERS = 10_000  # decoder layers a config may claim
MAX_WIDTH = 1 << 17  # hidden / ffn width, vocabulary rows are checked by memory


def lifted() -> bool:
    return os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no")


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable``; total RAM where /proc is missing)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def free_disk(path: str | os.PathLike[str]) -> int:
    """Free bytes on the filesystem that holds ``path`` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def check_count(what: str, n: int, limit: int) -> None:
    """Refuse ``n`` items of ``what`` above a fixed sanity ``limit``."""
    if n > limit and not lifted():
        raise UserError(f"{what}: {n:,} is above the limit of {limit:,} (hint: {ENV}=1 lifts it)")


def check_memory(what: str, nbytes: float, *, fraction: float = 0.9) -> None:
    """Refuse an allocation estimated at ``nbytes`` that exceeds ``fraction`` of available memory."""
    limit = int(available_memory() * fraction)
    if nbytes > limit and not lifted():
        raise UserError(f"{what} needs about {human_bytes(nbytes)} of memory, more than the "
                        f"{human_bytes(limit)} available (hint: {ENV}=1 lifts the check)")


def check_disk(what: str, nbytes: float, where: str | os.PathLike[str]) -> None:
    """Refuse writing about ``nbytes`` under ``where`` when the filesystem has less free space."""
    free = free_disk(where)
    if nbytes > free and not lifted():
        raise UserError(f"{what} needs about {human_bytes(nbytes)} on disk, more than the "
                        f"{human_bytes(free)} free under {where} (hint: {ENV}=1 lifts the check)")
