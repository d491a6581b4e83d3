"""How long-running commands use the machine and report on themselves: threads, progress, Ctrl-C.

Every compute command takes ``--threads N`` (``THREADS_OPTION``); without it the count comes from
``LMINSPECT_THREADS``, then ``OMP_NUM_THREADS``, then a default: the CPUs this process may use
minus the current 1-minute load average (at least 1). Why not torch's default (all cores)?
On a busy machine torch's OpenMP threads spin against each other and against other programs:
measured 2-17x slower than one thread for training, sweeps and ``stats --by-layer`` on a loaded
2-core machine, while on an idle machine the load term is ~0 and all cores are used.

``Progress`` shows a bar on a terminal and, when stderr is not a terminal (a redirected log),
a plain line every ``LMINSPECT_PROGRESS_EVERY`` seconds (default 10): done/total, elapsed, ETA.
``interrupted(...)`` turns Ctrl-C into one line saying what was saved, exit code 130.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from lminspect.errors import UserError

THREADS_ENV = "LMINSPECT_THREADS"
THREADS_HELP = ("Torch CPU threads (default: $LMINSPECT_THREADS, else $OMP_NUM_THREADS, else the usable CPUs "
                "minus the current load, at least 1: extra threads on a busy machine were measured 2-17x slower).")


def _cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_threads() -> int:
    """Usable CPUs minus the 1-minute load average (what other programs already keep busy), >= 1."""
    cpus = _cpus()
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # pragma: no cover - platforms without getloadavg
        load = 0.0
    return max(1, min(cpus, round(cpus - load)))


def _env_threads(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        raise UserError(f"${name}={raw!r}: expected a whole number of threads") from None
    if n < 1:
        raise UserError(f"${name}={n}: need at least one thread")
    return n


def resolve_threads(threads: int | None = None) -> int:
    """The thread count a command runs with (``--threads``, env, or the default)."""
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads {threads}: need at least one thread")
        return threads
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        n = _env_threads(name)
        if n is not None:
            return n
    return default_threads()


def set_threads(threads: int | None = None) -> int:
    """Apply the thread count and return it: torch's intra-op threads when torch is loaded, and
    ``OMP_NUM_THREADS`` for a torch imported later (and for ``weights.stats``'s scan workers)."""
    n = resolve_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def threads_label(n: int) -> str:
    """The thread count as summary lines print it: '1 thread', '2 threads'."""
    return f"{n} thread" + ("" if n == 1 else "s")


def _fmt_s(s: float) -> str:
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


class Progress:
    """Progress of one long job: a rich bar on a terminal, plain periodic lines otherwise.

    ``update(done)`` with the units done so far; cheap to call often (plain lines are throttled)."""

    def __init__(self, what: str, total: int, unit: str = "items", *, stream: TextIO | None = None,
                 every: float | None = None, bar: bool | None = None) -> None:
        self.what, self.total, self.unit = what, max(0, int(total)), unit
        self.stream = stream if stream is not None else sys.stderr
        if every is None:
            every = float(os.environ.get("LMINSPECT_PROGRESS_EVERY", "10"))
        self.every = every
        self.t0 = time.perf_counter()
        self._last = self.t0
        self.done = 0
        is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None
        if bar if bar is not None else is_tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn(),
                                     console=Console(file=self.stream), transient=True)
            self._task = self._bar.add_task(what, total=self.total)
            self._bar.start()

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        eta_s = _fmt_s(eta) if eta == eta else "?"
        return f"{self.what}: {self.done}/{self.total} {self.unit}, {_fmt_s(elapsed)} elapsed, ETA {eta_s}"

    def update(self, done: int, total: int | None = None) -> None:
        """Units done so far (the ``(done, total)`` progress-callback signature also fits)."""
        self.done = done
        if total is not None:
            self.total = total
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=self.total)
            return
        now = time.perf_counter()
        if now - self._last >= self.every or done >= self.total:
            self._last = now
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def interrupted(saved: Callable[[], str], stream: TextIO | None = None) -> Iterator[None]:
    """Ctrl-C inside the block: print ``lminspect: interrupted; <saved()>`` and exit with 130."""
    try:
        yield
    except KeyboardInterrupt:
        print(f"lminspect: interrupted; {saved()}", file=stream or sys.stderr, flush=True)
        raise SystemExit(130) from None
