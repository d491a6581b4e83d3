"""Small filesystem helpers shared by every writer: atomic writes and the cache dir."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def human_bytes(n: float) -> str:
    """A byte count for people: ``513.1 MB`` (binary multiples)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def cache_dir() -> Path:
    """Per-user cache (fetched models, statistics). ``LMINSPECT_CACHE`` overrides it."""
    env = os.environ.get("LMINSPECT_CACHE")
    if env:
        root = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(base) / "lminspect"
    root.mkdir(parents=True, exist_ok=True)
    return root


def describe_kind(path: Path) -> str | None:
    """What sits at ``path`` in words ("a folder", "a FIFO", "a symlink loop", ...); None if nothing."""
    import stat

    try:
        st = path.stat()
    except FileNotFoundError:
        return "a dangling symlink" if path.is_symlink() else None
    except OSError as e:  # ELOOP, EACCES, ENOTDIR ...
        import errno

        return "a symlink loop" if e.errno == errno.ELOOP else f"unreadable ({e.strerror})"
    if stat.S_ISDIR(st.st_mode):
        return "a folder"
    if stat.S_ISREG(st.st_mode):
        return "a file"
    if stat.S_ISFIFO(st.st_mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(st.st_mode):
        return "a socket"
    return "a device file"


def check_input_file(path: str | os.PathLike[str], *, option: str = "") -> Path:
    """A readable regular file, or one line saying what is there instead (no such file, a folder,
    a FIFO, a symlink loop, unreadable)."""
    from lminspect.errors import UserError

    path = Path(path)
    where = f"{option} {path}" if option else str(path)
    what = describe_kind(path)
    if what is None:
        raise UserError(f"{where}: no such file")
    if what == "a folder":
        raise UserError(f"{where}: is a folder, a file is wanted")
    if what != "a file":
        raise UserError(f"{where}: is {what}, not a regular file")
    if not os.access(path, os.R_OK):
        raise UserError(f"{where}: permission denied")
    return path


def read_text(path: str | os.PathLike[str], *, option: str = "", max_bytes: int | None = None) -> str:
    """A UTF-8 text file's content; a file that is not UTF-8 is one line with the byte offset
    (and the ``max_bytes`` cap, when given, refuses files too large to be what they claim)."""
    from lminspect.errors import UserError

    path = check_input_file(path, option=option)
    where = f"{option} {path}" if option else str(path)
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise UserError(f"{where}: {human_bytes(size)} is larger than the {human_bytes(max_bytes)} such a file "
                        "may have")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{where}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None


def check_output(path: str | os.PathLike[str], *, kind: str, overwrite: bool, option: str = "--out",
                 flag: str = "--overwrite", allow_nonempty: bool = False) -> Path:
    """Refuse an output path that would destroy something of the user's; call before any work.

    ``kind`` is "file" or "dir". An existing file (or a non-empty folder, unless ``allow_nonempty``)
    is refused unless ``overwrite``; the writer then replaces it only once the new content is
    complete (``atomic_path`` / ``atomic_dir``). A folder where a file is wanted, a FIFO, a socket
    or a symlink loop are refused always; so is an output whose parent is not a folder.
    """
    from lminspect.errors import UserError

    path = Path(path)
    for parent in path.parents:  # the first existing ancestor must be a folder
        what = describe_kind(parent)
        if what is None:
            continue
        if what != "a folder":
            raise UserError(f"{option} {path}: {parent} is {what}, not a folder")
        break
    what = describe_kind(path)
    if what is None:
        return path
    if kind == "file":
        if what == "a folder":
            raise UserError(f"{option} {path}: is a folder; give a file name (e.g. {path / 'out'})")
        if what != "a file":
            raise UserError(f"{option} {path}: is {what}; give a regular file name")
        if not overwrite:
            raise UserError(f"{option} {path}: already exists; refusing to replace it (hint: {flag}, or "
                            "another path)")
        return path
    if what == "a folder":
        if allow_nonempty or overwrite or not any(path.iterdir()):
            return path
        raise UserError(f"{option} {path}: is a folder that is not empty; refusing to replace it "
                        f"(hint: {flag}, or another path)")
    if what == "a file":
        if not overwrite:
            raise UserError(f"{option} {path}: is a file, a folder is wanted; refusing to replace it "
                            f"(hint: {flag}, or another path)")
        return path
    raise UserError(f"{option} {path}: is {what}; give a folder path")


def _tmp_prefix(path: Path) -> str:
    """Temporaries are named ``.NAME.PID.*``: a later writer can tell a dead writer's leftovers."""
    return f".{path.name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def remove_stale_temps(path: Path) -> None:
    """Delete temporaries of ``path`` left by writers that died (``.NAME.PID.*`` with a dead PID,
    and the ``.NAME.old`` of an interrupted replace)."""
    import shutil

    parent = path.parent
    if not parent.is_dir():
        return
    head = f".{path.name}."
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for p in entries:
        if not p.name.startswith(head):
            continue
        rest = p.name[len(head):]
        pid = rest.split(".", 1)[0]
        stale = rest == "old" or (pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)))
        if stale:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()


def fsync_tree(path: Path) -> None:
    """fsync every file under ``path`` (or the file itself), then the folders: data on disk before
    the rename that publishes it."""
    paths = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if path.is_dir():
        fsync_dir(path)


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse fsync on a folder
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux reports it in
    /proc; elsewhere it is set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ordinary_mode(path: Path, *, folder: bool) -> None:
    """Give a file or folder the mode an ordinary open()/mkdir() would (0666/0777 less the
    umask): mkstemp and mkdtemp make them private (0600/0700), which a model folder must not be."""
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it over ``path`` only if the block succeeds.

    Readers never see a half-written file, and a crash leaves the old file intact. The file
    is fsync'd before the rename. Refuses to replace a folder (``check_output`` says so earlier).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        ordinary_mode(tmp_path, folder=False)
        yield tmp_path
        if tmp_path.is_file():
            fsync_tree(tmp_path)
        if path.is_dir() and not path.is_symlink():
            from lminspect.errors import UserError

            raise UserError(f"{path}: is a folder; refusing to replace it with a file")
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a directory under a temp name; move it into place only when complete.

    An existing ``path`` (folder or file) is replaced only after the new folder is complete and
    fsync'd; callers refuse one the user did not ask to replace (``check_output``) first.
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        for sub, _dirs, files in os.walk(tmp):  # also what writers made private (safetensors' save_file: 0600)
            ordinary_mode(Path(sub), folder=True)
            for f in files:
                if not os.path.islink(os.path.join(sub, f)):
                    ordinary_mode(Path(sub) / f, folder=False)
        fsync_tree(tmp)
        if path.exists() or path.is_symlink():
            old = path.with_name(f".{path.name}.old")
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            elif old.exists() or old.is_symlink():
                old.unlink()
            os.replace(path, old)
            os.replace(tmp, path)
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- batched cache writes


class JsonPack:
    """Many small cached JSON results in one file: read once per process, written in batches.

    A cache, not a record: a result lost to a crash is computed again. ``flush`` re-reads the
    file and merges, so two processes filling one pack keep each other's results."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, Any] = {}
        self._stamp: tuple[int, int] | None = None  # (mtime_ns, size) of the file _data came from
        self._pending: dict[str, Any] = {}

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _read(self) -> dict[str, Any]:
        import json

        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> Any:
        if key in self._pending:
            return self._pending[key]
        if key not in self._data:  # (re)read when the file changed since: another process added results
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._data, self._stamp = self._read(), stamp
        return self._data.get(key)

    def put(self, key: str, value: Any) -> None:
        self._pending[key] = value

    def flush(self) -> None:
        import json

        if not self._pending:
            return
        data = {**self._read(), **self._pending}
        atomic_write_text(self.path, json.dumps(data))
        self._data, self._pending, self._stamp = data, {}, self._file_stamp()


def forget_cache_packs() -> None:
    """Drop this process's packs (after their files were deleted: ``stats --clear-cache``)."""
    _PACKS.clear()


_PACKS: dict[Path, JsonPack] = {}
_BATCH = {"depth": 0, "flush_every": 60.0, "last": 0.0}


def cache_pack(path: Path) -> JsonPack:
    """This process's :class:`JsonPack` at ``path``."""
    pack = _PACKS.get(path)
    if pack is None:
        pack = _PACKS[path] = JsonPack(path)
    return pack


def in_cache_batch() -> bool:
    """Whether a :func:`cache_batch` is open (cached results then go to packs, flushed in batches)."""
    return _BATCH["depth"] > 0


def flush_cache_packs(force: bool = False) -> None:
    """Write the packs' pending results: when ``force``d, else at most every ``flush_every`` seconds,
    so an interrupted batch keeps most of its work."""
    import time

    now = time.monotonic()
    if force or now - _BATCH["last"] >= _BATCH["flush_every"]:
        for pack in list(_PACKS.values()):
            pack.flush()
        _BATCH["last"] = now


@contextlib.contextmanager
def cache_batch(flush_every: float = 60.0) -> Iterator[None]:
    """Within the block, cache writers that support it (weight statistics, diff rows) put results
    into a few pack files instead of one fsync'd file each; the packs are written every
    ``flush_every`` seconds and when the block ends (also on an error or Ctrl-C)."""
    import time

    if _BATCH["depth"] == 0:
        _BATCH.update(flush_every=flush_every, last=time.monotonic())
    _BATCH["depth"] += 1
    try:
        yield
    finally:
        _BATCH["depth"] -= 1
        if _BATCH["depth"] == 0:
            flush_cache_packs(force=True)
