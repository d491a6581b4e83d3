"""Small filesystem helpers shared by every writer: atomic writes and the cache dir."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


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
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from lminspect.errors import UserError

        raise UserError(f"cache folder {root}: cannot be created ({e.strerror}); set LMINSPECT_CACHE to a "
                        "writable folder") from None
    return root


def cache_file(*parts: str) -> Path | None:
    """A file in the cache (``cache_dir()/parts...``), or None when the cache cannot be used (a
    read-only home): caches only save time, so a command goes on without one."""
    from lminspect.errors import UserError

    try:
        return cache_dir().joinpath(*parts)
    except UserError:
        return None


def cache_write_text(path: Path, text: str) -> None:
    """Write a cache entry atomically, or skip it when the cache folder cannot take it."""
    from lminspect.errors import UserError

    try:
        atomic_write_text(path, text)
    except (OSError, UserError):
        pass


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


def read_regular(path: str | os.PathLike[str], *, option: str = "", limit: int | None = None,
                 tail: int | None = None) -> bytes:
    """The bytes of a regular file, opened without blocking first: a FIFO, socket or device where a
    file is expected is one line (``is a FIFO``), never a read that waits forever. ``tail``: only
    the last that many bytes. Missing files raise FileNotFoundError as ``open`` does."""
    import stat

    from lminspect.errors import UserError

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, "Is a directory", os.fspath(path))
        if not stat.S_ISREG(st.st_mode):
            what = describe_kind(Path(path)) or "not a regular file"
            where = f"{option} {path}" if option else os.fspath(path)
            raise UserError(f"{where}: is {what}, not a regular file")
        if limit is not None and st.st_size > limit:
            where = f"{option} {path}" if option else os.fspath(path)
            raise UserError(f"{where}: {human_bytes(st.st_size)} is larger than the {human_bytes(limit)} such a file "
                            "may have")
        os.set_blocking(fd, True)
        if tail is not None:
            os.lseek(fd, max(0, st.st_size - tail), os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike[str], *, option: str = "", max_bytes: int | None = None) -> str:
    """A UTF-8 text file's content; a file that is not UTF-8 is one line with the byte offset
    (and the ``max_bytes`` cap, when given, refuses files too large to be what they claim)."""
    from lminspect.errors import UserError

    path = check_input_file(path, option=option)
    where = f"{option} {path}" if option else str(path)
    data = read_regular(path, option=option, limit=max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{where}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None


def check_output(path: str | os.PathLike[str], *, kind: str, overwrite: bool, option: str = "--out",
                 flag: str = "--overwrite", allow_nonempty: bool = False,
                 inputs: tuple[str | os.PathLike[str] | None, ...] = ()) -> Path:
    """Refuse an output path that would destroy something of the user's; call before any work.

    ``kind`` is "file" or "dir". An existing file (or a non-empty folder, unless ``allow_nonempty``)
    is refused unless ``overwrite``; the writer then replaces it only once the new content is
    complete (``atomic_path`` / ``atomic_dir``). A folder where a file is wanted, a FIFO, a socket
    or a symlink loop are refused always; so is an output whose parent is not a folder, one that
    is, contains or lies inside one of ``inputs`` (``check_not_input``), and one whose folder
    cannot be written (``check_writable``).
    """
    from lminspect.errors import UserError

    path = Path(path)
    if kind == "dir" and not allow_nonempty:  # replacing "." or ".." would pull the floor away
        here = Path(os.getcwd()).resolve()
        if here.is_relative_to(Path(os.path.realpath(path))):
            raise UserError(f"{option} {path}: is the current folder or one above it; give the name of a folder "
                            "to write (e.g. ./out)")
    check_not_input(path, *inputs, option=option, additive=kind == "dir" and allow_nonempty,
                    new_file=kind == "file" and not os.path.lexists(path))
    for parent in path.parents:  # the first existing ancestor must be a folder
        what = describe_kind(parent)
        if what is None:
            continue
        if what != "a folder":
            raise UserError(f"{option} {path}: {parent} is {what}, not a folder")
        break
    if path.parent.is_dir():
        with contextlib.suppress(OSError):
            recover_swap(path)  # a writer killed mid-replace: the old copy back first
    what = describe_kind(path)
    if what in (None, "a file", "a folder"):
        check_writable(path if what == "a folder" and kind == "dir" and allow_nonempty else path.parent,
                       option=f"{option} {path}")
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


def check_writable(folder: Path, *, option: str) -> None:
    """Refuse, before any work, a destination whose folder (or first existing ancestor) cannot take
    a new file: read-only file system, no permission. Probes with a real file (root ignores modes)."""
    import errno

    from lminspect.errors import UserError

    folder = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    probe = folder / f".lminspect-probe.{os.getpid()}.tmp"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except OSError as e:
        why = {errno.EROFS: "is on a read-only file system", errno.EACCES: "is not writable (permission denied)",
               errno.EPERM: "is not writable (permission denied)"}.get(e.errno or 0, f"is not writable ({e.strerror})")
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            why = "is on a full disk"
        raise UserError(f"{option}: {folder} {why}; nothing was computed") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def _real(p: str | os.PathLike[str]) -> Path | None:
    """The real path of an existing input (symlinks followed); a ``RUN@STEP`` reference is its RUN;
    None for a name that is no path (a fetched model, ``hf:ORG/NAME``)."""
    s = os.fspath(p)
    for cand in (s, s.rsplit("@", 1)[0] if "@" in s else None):
        if cand and os.path.lexists(cand):
            return Path(os.path.realpath(cand))
    return None


def check_not_input(out: str | os.PathLike[str], *inputs: str | os.PathLike[str] | None,
                    option: str = "--out", additive: bool = False, new_file: bool = False,
                    flag: str | None = "--overwrite") -> None:
    """Refuse an output that is, contains or lies inside one of the command's inputs, even with
    --overwrite: replacing it would destroy what the command is reading (``convert m/q.gguf m``,
    ``stitch export m m``, ``grow RUN --out RUN``). Paths are compared resolved, symlinks followed.
    Adding without replacing is no harm: an ``additive`` folder (new files beside old ones: sweep
    results) may contain or lie inside inputs, and a ``new_file`` may lie inside an input folder."""
    from lminspect.errors import UserError

    o = Path(os.path.realpath(os.fspath(out)))
    for inp in inputs:
        if inp is None:
            continue
        r = _real(inp)
        if r is None:
            continue
        if o == r:
            rel = "is"
        elif r.is_relative_to(o) and not additive:
            rel = "contains"
        elif o.is_relative_to(r) and not (additive or new_file):
            rel = "is inside"
        else:
            continue
        even = f"{flag} does not change that; " if flag else ""
        raise UserError(f"{option} {out}: {rel} the input {inp}; writing there would destroy what is being read "
                        f"({even}give another path)")


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


def _is_old_copy(rest: str) -> int | None:
    """The PID of a ``.NAME.PID.old`` (or legacy ``.NAME.old``, PID 0): the previous content that
    the fallback swap of ``atomic_dir`` moved aside; None for other names."""
    if rest == "old":
        return 0
    pid, _, tail = rest.partition(".")
    return int(pid) if tail == "old" and pid.isdigit() else None


def recover_swap(path: Path) -> None:
    """Finish a replace that a killed writer left between its two renames: when ``path`` is
    missing and the old copy sits beside it, put the old copy back (it may be the only one);
    when ``path`` is there, the old copy was superseded by complete new content."""
    import shutil

    parent = path.parent
    head = f".{path.name}."
    try:
        olds = [p for p in parent.iterdir() if p.name.startswith(head)
                and _is_old_copy(p.name[len(head):]) is not None]
    except OSError:
        return
    for p in olds:
        pid = _is_old_copy(p.name[len(head):])
        if pid and (pid == os.getpid() or _pid_alive(pid)):
            continue  # a live writer is between its renames
        if not (path.exists() or path.is_symlink()):
            os.replace(p, path)
            fsync_dir(parent)
        elif p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()


def remove_stale_temps(path: Path) -> None:
    """Delete temporaries of ``path`` left by writers that died (``.NAME.PID.*`` with a dead PID),
    after restoring the old copy of an interrupted replace when ``path`` itself is missing."""
    import shutil

    parent = path.parent
    if not parent.is_dir():
        return
    recover_swap(path)
    head = f".{path.name}."
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for p in entries:
        if not p.name.startswith(head) or _is_old_copy(p.name[len(head):]) is not None:
            continue
        pid = p.name[len(head):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
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


# ---- fault injection: tests kill a writer at a named step (LMINSPECT_FAULT=STEP[@NAME][#N][:ACTION])
FAULT_ENV = "LMINSPECT_FAULT"
_fault_counts: dict[str, int] = {}


def fault_point(step: str, path: Path) -> None:
    """Where ``LMINSPECT_FAULT`` names this step (and ``path``'s name, and the Nth time), SIGKILL
    this process there (or raise ENOSPC with ``:enospc``): how tests prove every step is lossless.
    Steps: before-fsync, before-rename, between-renames, before-cleanup (and after-rename for files)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    for item in spec.split(","):
        item, _, action = item.partition(":")
        item, _, nth = item.partition("#")
        name, _, target = item.partition("@")
        if name != step or (target and target != path.name):
            continue
        _fault_counts[item] = _fault_counts.get(item, 0) + 1
        if _fault_counts[item] != (int(nth) if nth else 1):
            continue
        if action == "enospc":
            import errno

            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


# ---- a full disk (ENOSPC, EFBIG under a file-size limit, a quota) said in one line
_FULL_WORDS = ("No space left", "File too large", "Disk quota", "code: 28", "code: 27", "StorageFull",
               "FileTooLarge", "file write failed")


def is_disk_full(e: BaseException) -> bool:
    """An error from writing that means no room: OSError 28/27/122, or a library's wrapped form
    (safetensors' SafetensorError "IoError(Os { code: 28 ...", torch's "file write failed")."""
    import errno

    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    return any(w in str(e) for w in _FULL_WORDS)


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def disk_full_error(path: Path, written: int = 0, need: int | None = None) -> Exception:
    """The one line for a write that ran out of room: the target, what it needs, what is free."""
    import shutil

    from lminspect.errors import UserError

    try:
        free = human_bytes(shutil.disk_usage(next(p for p in (path, *path.parents) if p.exists())).free)
    except (OSError, StopIteration):
        free = "unknown"
    needs = (f"needs about {human_bytes(need)}" if need else
             f"needs more than {human_bytes(written)}" if written else "needs more room")
    return UserError(f"{path}: no room to write it ({_why_full()}): {needs}, {free} free there; "
                     "nothing was replaced")


def _why_full() -> str:
    """A process file-size limit (ulimit -f, prlimit --fsize) named when there is one."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        soft = -1
    if soft not in (-1, getattr(resource, "RLIM_INFINITY", -1)):
        return f"over this process's file-size limit of {human_bytes(soft)}, ulimit -f, or a full disk"
    return "disk full or a quota"


@contextlib.contextmanager
def _full_disk_is_one_line(path: Path, tmp: Path, need: int | None) -> Iterator[None]:
    from lminspect.errors import UserError

    try:
        yield
    except UserError:
        raise
    except Exception as e:
        if not is_disk_full(e):
            raise
        try:
            written = _tree_bytes(tmp)
        except OSError:
            written = 0
        raise disk_full_error(path, written, need) from None


# ---- renameat2(RENAME_EXCHANGE): swap two names in one step (Linux >= 3.15); None elsewhere
def _exchange_fn():  # noqa: ANN202 - a ctypes function or None
    import ctypes
    import sys

    if not sys.platform.startswith("linux") or os.environ.get("LMINSPECT_NO_EXCHANGE"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap the names ``a`` and ``b`` (both exist); False where the OS or the file
    system cannot, so the caller falls back to two renames."""
    import ctypes
    import errno

    fn = _exchange_fn()
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _remove(p: Path) -> None:
    import shutil

    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            p.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, need: int | None = None) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it over ``path`` only if the block succeeds.

    Readers never see a half-written file, and a crash leaves the old file intact. The file
    is fsync'd before the rename. Refuses to replace a folder (``check_output`` says so earlier).
    A full disk is one line naming ``path`` (``need``: the bytes it should take, when known).
    """
    path = Path(os.path.abspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        ordinary_mode(tmp_path, folder=False)
        with _full_disk_is_one_line(path, tmp_path, need):
            yield tmp_path
            fault_point("before-fsync", path)
            if tmp_path.is_file():
                fsync_tree(tmp_path)
        if path.is_dir() and not path.is_symlink():
            from lminspect.errors import UserError

            raise UserError(f"{path}: is a folder; refusing to replace it with a file")
        fault_point("before-rename", path)
        os.replace(tmp_path, path)
        fault_point("after-rename", path)
        fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path, need=len(data)) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, need: int | None = None) -> Iterator[Path]:
    """Build a directory under a temp name; move it into place only when complete.

    An existing ``path`` (folder or file) is replaced only after the new folder is complete and
    fsync'd; callers refuse one the user did not ask to replace (``check_output``) first. The
    replace is one ``renameat2(RENAME_EXCHANGE)`` where the OS has it; elsewhere two renames
    (old -> ``.NAME.PID.old``, new -> NAME), and a writer killed between them leaves the old copy
    that the next writer (``remove_stale_temps``) puts back: no instant loses both.
    """
    path = Path(os.path.abspath(path))  # "out/." and "out/" name the folder itself, not "."
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        with _full_disk_is_one_line(path, tmp, need):
            yield tmp
            for sub, _dirs, files in os.walk(tmp):  # also what writers made private (safetensors: 0600)
                ordinary_mode(Path(sub), folder=True)
                for f in files:
                    if not os.path.islink(os.path.join(sub, f)):
                        ordinary_mode(Path(sub) / f, folder=False)
            fault_point("before-fsync", path)
            fsync_tree(tmp)
        fault_point("before-rename", path)
        old = None
        if not (path.exists() or path.is_symlink()):
            os.replace(tmp, path)
        elif exchange(tmp, path):  # tmp now holds the old content, removed below
            fsync_dir(path.parent)
            fault_point("between-renames", path)
        else:
            old = path.with_name(f"{_tmp_prefix(path)}old")
            _remove(old)
            os.replace(path, old)
            fsync_dir(path.parent)
            fault_point("between-renames", path)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)  # the old content back under its name before anything else
                raise
        fsync_dir(path.parent)
        fault_point("before-cleanup", path)
        if old is not None:
            _remove(old)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)
