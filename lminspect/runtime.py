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
                "minus the current load, at least 1: extra threads on a busy machine were measured 2-17x slower; "
                "docs/cli.md).")


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


MAX_THREADS_PER_CPU = 4  # more threads than this per core only thrash (and 10**9 would not start)


def _capped(n: int, where: str) -> int:
    """``n`` threads, or at most ``MAX_THREADS_PER_CPU`` x the CPUs with a one-line warning."""
    cap = MAX_THREADS_PER_CPU * (os.cpu_count() or 1)
    if n <= cap:
        return n
    print(f"lminspect: warning: {where}{n} is more than {MAX_THREADS_PER_CPU} x the {os.cpu_count() or 1} CPUs; "
          f"using {cap} threads", file=sys.stderr)
    return cap


def resolve_threads(threads: int | None = None) -> int:
    """The thread count a command runs with (``--threads``, env, or the default)."""
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads {threads}: need at least one thread", option="--threads")
        return _capped(threads, "--threads ")
    for name in (THREADS_ENV, "OMP_NUM_THREADS"):
        n = _env_threads(name)
        if n is not None:
            return _capped(n, f"${name}=")
    return default_threads()


_applied: int | None = None  # the count set_threads last applied in this process (None: never)


def set_threads(threads: int | None = None) -> int:
    """Apply the thread count and return it: torch's intra-op threads when torch is loaded, and
    ``OMP_NUM_THREADS`` for a torch imported later (and for ``weights.stats``'s scan workers)."""
    global _applied
    n = resolve_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(n)
    # idle OpenMP threads sleep instead of spinning: the stored-weights kernels (numba) and torch's
    # ops take turns on the same cores (models/packed.py); read once, when torch loads
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    _applied = n
    return n


def ensure_threads(threads: int | None = None) -> int:
    """The thread setup of code that may run outside a command (``li.open``, session scripts):
    ``threads`` when given, else the count a command already applied in this process (its
    ``--threads`` wins over the environment), else the rule of ``resolve_threads`` (the same as the
    CLI's default, so a notebook on a busy machine does not run with torch's all-cores default)."""
    if threads is None and _applied is not None:
        return set_threads(_applied)
    return set_threads(threads)


@contextlib.contextmanager
def one_thread(when: bool = True) -> Iterator[None]:
    """Torch on one intra-op thread inside the block (when ``when``), the count restored after.

    For work made of many small ops (a blocked statistics pass, per-chunk scans in Python
    threads): an OpenMP fork/join per op costs more than the op, measured 3-100x slower on a
    busy 2-core machine. Imports torch (callers are torch code already)."""
    import torch

    threads = torch.get_num_threads()
    if not when or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def threads_label(n: int) -> str:
    """The thread count as summary lines print it: '1 thread', '2 threads'."""
    return f"{n} thread" + ("" if n == 1 else "s")


def run_summary(what: str, n_threads: int, t0: float | None = None) -> str:
    """A command's closing line: 'stats of 30 tensors in 4.2 s, 1 thread' (the time since ``t0``,
    a ``time.perf_counter()`` value, when given)."""
    took = f" in {time.perf_counter() - t0:.1f} s" if t0 is not None else ""
    return f"{what}{took}, {threads_label(n_threads)}"


def _fmt_s(s: float) -> str:
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


LONG_JOB_S = 120.0  # a job projected to take longer says so early, once, with a quicker variant


def nice_count(x: float) -> int:
    """``x`` rounded down to 1, 2 or 5 times a power of ten (at least 1): a count to suggest."""
    if x < 2:
        return 1
    p = 10 ** (len(str(int(x))) - 1)
    return next(m * p for m in (5, 2, 1) if m * p <= x)


def _about(seconds: float) -> str:
    if seconds >= 5400:
        return f"~{seconds / 3600:.1f} h"
    return f"~{seconds / 60:.0f} min" if seconds >= 90 else f"~{seconds:.0f} s"


class Estimate:
    """One line on stderr, once, early in a long job: how long all of it will take at this rate and
    how to take a quick look first (``~28 min at 1 thread; --limit 20 for a quick look``).

    ``quick(seconds)`` turns the projected seconds into the quicker variant (the command knows its
    flag); nothing is said for a job projected under ``LONG_JOB_S``. The projection is made at the
    first update after ``after`` seconds with some units done (the first batch sets the rate)."""

    def __init__(self, total: int | None, quick: Callable[[float], str], *, threads: int | None = None,
                 start: int = 0, stream: TextIO | None = None, after: float = 1.0) -> None:
        self.total, self.quick, self.threads, self.start = total, quick, threads, start
        self.stream, self.after = stream, after
        self.t0 = time.perf_counter()
        self.line: str | None = None
        self._done = False

    def update(self, done: int, total: int | None = None) -> None:
        total = total if total is not None else self.total
        ran, elapsed = done - self.start, time.perf_counter() - self.t0
        if self._done or total is None or ran <= 0 or elapsed < self.after or done >= total:
            return
        self._done = True
        seconds = elapsed / ran * (total - self.start)
        if seconds < LONG_JOB_S:
            return
        threads = self.threads
        if threads is None and "torch" in sys.modules:
            threads = sys.modules["torch"].get_num_threads()
        at = f" at {threads_label(threads)}" if threads else ""
        self.line = f"lminspect: note: {_about(seconds)}{at}; {self.quick(seconds)}"
        print(self.line, file=self.stream or sys.stderr, flush=True)


class Progress:
    """Progress of one long job: a rich bar on a terminal, plain periodic lines otherwise.

    ``update(done)`` with the units done so far; cheap to call often (plain lines are throttled to
    one per ``every`` seconds, plus the last; a job done within ``every`` seconds prints none). ``total=None`` when the end is not known (no bar
    length, no ETA); ``info`` is a short note shown after the counts (a tensor name, the loss);
    ``start`` is where a resumed job begins (its ETA counts only the units done in this run);
    ``quick`` makes a long job print an :class:`Estimate` early."""

    def __init__(self, what: str, total: int | None, unit: str = "items", *, stream: TextIO | None = None,
                 every: float | None = None, bar: bool | None = None, start: int = 0,
                 quick: Callable[[float], str] | None = None, threads: int | None = None) -> None:
        self.what, self.unit = what, unit
        self.total = None if total is None else max(0, int(total))
        self.stream = stream if stream is not None else sys.stderr
        if every is None:
            every = float(os.environ.get("LMINSPECT_PROGRESS_EVERY", "10"))
        self.every = every
        self.t0 = time.perf_counter()
        self._last = self.t0
        self.start = self.done = start
        self.info = ""
        self._printed = False
        self._estimate = None if quick is None else Estimate(total, quick, threads=threads, start=start,
                                                              stream=self.stream)
        is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar = None
        if bar if bar is not None else is_tty:
            self._start_bar()

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        # markup=False: the info is a tensor name, a loss, a path: text, never rich tags
        self._bar = RichProgress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(),
                                 TextColumn("{task.fields[info]}", markup=False),
                                 console=Console(file=self.stream), transient=True)
        self._task = self._bar.add_task(self.what, total=self.total, completed=self.done, info="")
        self._bar.start()

    def line(self) -> str:
        """``what: done/total unit, elapsed, ETA`` (``done unit, elapsed`` when the total is unknown)."""
        elapsed = time.perf_counter() - self.t0
        if self.total is None:
            text = f"{self.what}: {self.done} {self.unit}, {_fmt_s(elapsed)} elapsed"
        else:
            ran = self.done - self.start
            eta = _fmt_s(elapsed / ran * (self.total - self.done)) if ran > 0 else "?"
            text = f"{self.what}: {self.done}/{self.total} {self.unit}, {_fmt_s(elapsed)} elapsed, ETA {eta}"
        return f"{text} ({self.info})" if self.info else text

    def update(self, done: int, total: int | None = None, info: str | None = None) -> None:
        """Units done so far (the ``(done, total)`` progress-callback signature also fits)."""
        self.done = done
        if total is not None:
            self.total = total
        if info is not None:
            self.info = info
        if self._estimate is not None:
            self._estimate.update(done, self.total)
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=self.total, info=self.info)
            return
        now = time.perf_counter()
        end = self.total is not None and done >= self.total
        if now - self._last >= self.every or (end and self._printed):  # a quick job stays quiet
            self._last = now
            self._printed = True
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


NOTHING_WRITTEN = "nothing written"


@contextlib.contextmanager
def interrupted(saved: Callable[[], str] = lambda: NOTHING_WRITTEN,
                stream: TextIO | None = None) -> Iterator[None]:
    """Ctrl-C inside the block: print ``lminspect: interrupted; <saved()>`` and exit with 130.

    ``saved()`` says what is on disk, e.g. "after 120/400 items; nothing written" or "checkpoint
    step_300 saved in RUN". The CLI wraps every command in the default ("nothing written": the
    writers are atomic, so an interrupted command leaves no half-written output); commands that
    keep partial results wrap their work in their own ``interrupted(...)``."""
    try:
        yield
    except KeyboardInterrupt:
        print(interrupted_line(saved()), file=stream or sys.stderr, flush=True)
        raise SystemExit(130) from None


def interrupted_line(saved: str) -> str:
    """The one line a command prints when Ctrl-C stops it (then it exits with 130)."""
    return f"lminspect: interrupted; {saved}"
