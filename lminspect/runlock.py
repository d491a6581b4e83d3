"""One process at a time per run directory: an OS-level lock (``fcntl.flock``) on a file inside it.

``train``, ``train --resume`` and ``activations`` hold the lock of their directory for the whole
run. A second process on the same directory gets one line naming the holder's pid and command
instead of silently interleaving rows and checkpoints. The kernel drops the lock when the holder
exits, however it exits (kill -9 included), so a stale lock file never blocks anyone: only a live
holder does. The file itself stays (removing it would race with a process about to lock it).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from lminspect.errors import UserError

LOCK_NAME = ".lminspect.lock"


def _holder(lock: Path) -> str:
    try:
        text = lock.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    pid, _, cmd = text.partition(" ")
    if not pid.isdigit():
        return "another process"
    return f"process {pid}" + (f" ({cmd[:80]})" if cmd else "")


@contextlib.contextmanager
def run_dir_lock(path: str | os.PathLike[str], *, option: str = "--run-dir") -> Iterator[Path]:
    """Hold the lock of directory ``path`` (created if missing) for the block; refuse if it is held.

    A directory this call created and the block left empty (a run refused before it wrote
    anything) is removed again, and so is a lock file this call added to an existing folder when
    the block refuses it (UserError), so a failed command leaves no trace.
    """
    import fcntl

    from lminspect.fsutil import describe_kind

    path = Path(path)
    what = describe_kind(path)
    if what is not None and what != "a folder":
        raise UserError(f"{option} {path}: is {what}, a folder is wanted", option=option)
    created = what is None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{option} {path}: cannot create the folder ({e.strerror})", option=option) from e
    lock = path / LOCK_NAME
    new_lock = not lock.exists()
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UserError(f"{option} {path}: cannot create its lock file ({e.strerror})", option=option) from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{option} {path}: in use by {_holder(lock)}; wait for it to finish or "
                            "use another folder", option=option) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {' '.join(sys.argv)[:200]}\n".encode())
        try:
            yield path
        except UserError:
            if new_lock and not created:  # refused to use the user's folder: leave it as it was
                with contextlib.suppress(OSError):
                    lock.unlink()
            raise
        finally:
            if created:
                with contextlib.suppress(OSError):
                    if [p.name for p in path.iterdir()] == [LOCK_NAME]:
                        lock.unlink()
                        path.rmdir()
    finally:
        os.close(fd)  # closing the descriptor releases the lock
