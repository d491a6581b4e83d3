"""Batched cache writes: many small cached JSON results (weight statistics, diff rows) in a few
pack files, written every so often instead of one fsync'd file per result (``stats``/``diff`` over
a whole model wrote ~550 files). A cache, not a record: what a crash loses is computed again."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lminspect.fsutil import cache_write_text


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
        cache_write_text(self.path, json.dumps(data))  # a full or read-only cache: skipped
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


def read_cached(path: Path | None, pack_path: Path | None, key: str) -> dict[str, Any] | None:
    """A cached result: its own file at ``path``, else entry ``key`` of the pack at ``pack_path``
    (either None when the cache cannot be used)."""
    import json

    if path is not None and path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            pass
    return None if pack_path is None else cache_pack(pack_path).get(key)


def save_cached(path: Path | None, pack_path: Path | None, key: str, out: dict[str, Any]) -> None:
    """Inside :func:`cache_batch`, ``out`` goes to the pack; otherwise to its own fsync'd file;
    nothing when the cache cannot be used (a cache only saves time)."""
    import json

    if in_cache_batch() and pack_path is not None:
        cache_pack(pack_path).put(key, out)
        flush_cache_packs()
    elif path is not None:
        cache_write_text(path, json.dumps(out))
