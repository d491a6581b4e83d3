"""The packed (tiled) weights of a GGUF, cached beside it so the next start does not pack again.

``PackedWeight.from_gguf_blocks`` re-lays a Q8_0/Q4_0/Q4_1 linear layer out in tiles at load time
when decoding with float32 activations (``packed.EXACT_DECODE``, or no integer kernels; SmolLM2:
~0.2-0.3 CPU s on every start). ``PackCache.pack`` wraps that one call:
the first load packs and, at the end of the load (``save``), writes every tile array into one
file; the next load memory-maps that file (copy-on-write, so the tiles are shared, evictable
file pages, not a copy) and checks it instead of packing.

Where: ``NAME.gguf.lminspect-pack`` beside the GGUF; when its folder is read-only (or holds a
file of that name that is not ours), ``<cache>/packs/<hash of the path>.lminspect-pack``; or
nowhere (``LMINSPECT_PACK_CACHE=0``, or no writable place: the load packs as before).

Keyed by file identity (real path, size, mtime_ns, inode) and by the pack format (``packed.
PACK_FORMAT``, ``TILE`` and a hash of packed.py's own text, so a changed tile layout never reads
an old file); a mismatch packs again and replaces the file. A file that does not parse or whose
data CRC differs is reported in one warning line and rebuilt.

Size: one file per GGUF, about the size of its tiled tensors (at most the GGUF's size); packs
under ``MIN_BYTES`` are not cached (tiny models pack in microseconds). The user-cache fallback
keeps at most ``USER_CACHE_MAX`` bytes of packs, the least recently used removed first.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lminspect.models import packed as pk
from lminspect.models.packed import PackedWeight

MAGIC = b"LMIPACK1"
SUFFIX = ".lminspect-pack"
ALIGN = 64  # every array starts on a cache line
MIN_BYTES = 8 << 20  # packs smaller than this are not worth a file
USER_CACHE_MAX = 4 << 30  # total bytes of packs kept in the user cache folder
_FORMAT_ID: str | None = None


def format_id() -> str:
    """The tile format packs are keyed by: the version constant, the tile size, and packed.py's
    text (a layout changed without bumping the constant still misses)."""
    global _FORMAT_ID
    if _FORMAT_ID is None:
        try:
            text = Path(pk.__file__).read_bytes()
        except OSError:  # no source beside the bytecode: the version constant alone
            text = b""
        _FORMAT_ID = f"{pk.PACK_FORMAT}/{pk.TILE}/{sys.byteorder}/{hashlib.sha1(text).hexdigest()[:16]}"
    return _FORMAT_ID


def _identity(path: Path) -> dict[str, Any] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _ours(path: Path) -> bool:
    """Whether ``path`` is missing or a pack file (never replace a file we did not write)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _user_path(source: Path) -> Path | None:
    from lminspect.fsutil import cache_file

    return cache_file("packs", hashlib.sha1(str(source).encode()).hexdigest()[:20] + SUFFIX)


def _warn(msg: str) -> None:
    print(f"lminspect: warning: {msg}", file=sys.stderr)


class PackCache:
    """The packs of one GGUF file: ``pack`` (a hit, or ``from_gguf_blocks``), then ``save``."""

    def __init__(self, gguf: Any) -> None:
        self.gguf = gguf
        self.source = Path(os.path.realpath(gguf.path)) if gguf is not None else None
        self.ident = _identity(self.source) if self.source is not None else None
        self.enabled = self.ident is not None and os.environ.get("LMINSPECT_PACK_CACHE", "1") != "0"
        self.entries: dict[str, dict[str, Any]] = {}  # key -> entry of the file read
        self._data: np.ndarray | None = None  # the file's data section (copy-on-write map)
        self._made: dict[str, PackedWeight] = {}  # key -> every tiled weight of this load
        self.misses = 0
        self.path: Path | None = None  # the file read, if any
        if self.enabled:
            self._load()

    # ------------------------------------------------------------------ reading
    def _candidates(self) -> list[Path]:
        assert self.source is not None
        out = [self.source.with_name(self.source.name + SUFFIX)]
        user = _user_path(self.source)
        return out + ([user] if user is not None else [])

    def _load(self) -> None:
        for path in self._candidates():
            if not path.is_file():
                continue
            try:
                head, data = _read(path)
            except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
                if _ours(path):
                    _warn(f"{path}: unreadable packed-weights cache ({e}); packing again")
                continue
            if head.get("format") != format_id() or head.get("source") != self.ident:
                continue  # another model file or tile format: replaced by this load's save
            self.entries, self._data, self.path = head["entries"], data, path
            if path.parent != self.source.parent:
                os.utime(path)  # the user cache removes the least recently used first
            return

    def _hit(self, key: str) -> PackedWeight | None:
        e = self.entries.get(key)
        if e is None or self._data is None:
            return None
        arrays = []
        for dtype, shape, off in e["arrays"]:
            n = int(np.prod(shape)) * np.dtype(dtype).itemsize
            arrays.append(torch.from_numpy(self._data[off:off + n].view(dtype).reshape(shape)))
        return PackedWeight(e["kind"], e["out"], e["in"], *arrays)

    # ------------------------------------------------------------------ packing
    def pack(self, kind: str, raw: np.ndarray, in_features: int, tiles: bool = True) -> PackedWeight:
        """``PackedWeight.from_gguf_blocks(kind, raw, in_features, tiles)``, from the cache when it
        holds these bytes' tiles."""
        off = self.gguf.offset_of(raw) if self.enabled and tiles and kind in pk.TILED else None
        if off is None:
            return PackedWeight.from_gguf_blocks(kind, raw, in_features, tiles=tiles)
        key = f"{off}:{raw.shape[0]}x{raw.shape[1]}:{kind}:{in_features}"
        p = self._hit(key)
        if p is None:
            p = PackedWeight.from_gguf_blocks(kind, raw, in_features, tiles=True)
            self.misses += 1
        self._made[key] = p
        return p

    # ------------------------------------------------------------------ writing
    def save(self) -> Path | None:
        """Write this load's tiles when any were packed (not read): beside the GGUF, else in the
        user cache. Never fails the load: a cache that cannot be written is skipped."""
        if not self.enabled or not self.misses or not self._made:
            return None
        layout, arrays, pos = {}, [], 0
        for key, p in self._made.items():
            entry = []
            for t in (p.qs, p.d, p.m):
                if t is None:
                    continue
                a = np.ascontiguousarray(t.numpy())
                pos += -pos % ALIGN
                entry.append([a.dtype.str, list(a.shape), pos])
                arrays.append((pos, a))
                pos += a.nbytes
            layout[key] = {"kind": p.kind, "out": p.out_features, "in": p.in_features, "arrays": entry}
        if pos < MIN_BYTES:
            return None
        crc = 0
        for _, a in arrays:  # the padding is zeros, left out of the CRC
            crc = zlib.crc32(a.reshape(-1).view(np.uint8), crc)
        head = {"format": format_id(), "source": self.ident, "data_bytes": pos, "crc32": crc, "entries": layout}
        for path in self._candidates():
            if _write(path, head, arrays):
                if path.parent != self.source.parent:
                    _prune(path.parent, keep=path)
                return path
        return None


def _read(path: Path) -> tuple[dict[str, Any], np.ndarray]:
    """The header and the data section (a copy-on-write map) of a pack file; ValueError when it
    is not whole."""
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise ValueError("not a pack file")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 1 << 30:
            raise ValueError("header too long")
        head = json.loads(f.read(n).decode("utf-8"))
    start = _data_start(n)
    size = path.stat().st_size
    if size != start + int(head["data_bytes"]):
        raise ValueError(f"{size} bytes, expected {start + int(head['data_bytes'])}")
    data = np.memmap(path, np.uint8, mode="c", offset=start, shape=(int(head["data_bytes"]),))
    crc, end = 0, 0
    for e in head["entries"].values():
        for dtype, shape, off in e["arrays"]:
            end = off + int(np.prod(shape)) * np.dtype(dtype).itemsize
            if off < 0 or end > data.size:
                raise ValueError("an array lies outside the file")
            crc = zlib.crc32(data[off:end], crc)
    if crc != head["crc32"]:
        raise ValueError("data CRC mismatch")
    return head, data


def _data_start(header_len: int) -> int:
    n = len(MAGIC) + 8 + header_len
    return n + (-n % ALIGN)


def _write(path: Path, head: dict[str, Any], arrays: list[tuple[int, np.ndarray]]) -> bool:
    """Write one pack file atomically; False (nothing left behind) when this place cannot take it."""
    from lminspect.errors import UserError
    from lminspect.fsutil import atomic_path

    if not _ours(path) or not os.access(path.parent if path.parent.exists() else path.parent.parent, os.W_OK):
        return False
    text = json.dumps(head, separators=(",", ":")).encode("utf-8")
    start = _data_start(len(text))
    try:
        with atomic_path(path, need=start + head["data_bytes"]) as tmp, open(tmp, "wb") as f:
            f.write(MAGIC + struct.pack("<Q", len(text)) + text)
            f.write(b"\0" * (start - f.tell()))
            for off, a in arrays:
                f.write(b"\0" * (start + off - f.tell()))
                f.write(a.reshape(-1).view(np.uint8).data)
    except (OSError, UserError):
        return False
    return True


def _prune(folder: Path, keep: Path) -> None:
    """Keep the user cache's packs under ``USER_CACHE_MAX`` bytes: least recently used go first."""
    try:
        packs = [(p.stat().st_mtime, p.stat().st_size, p) for p in folder.glob("*" + SUFFIX)]
    except OSError:
        return
    total = sum(s for _, s, _ in packs)
    for _, size, p in sorted(packs):
        if total <= USER_CACHE_MAX:
            break
        if p != keep:
            try:
                p.unlink()
                total -= size
            except OSError:
                pass


__all__ = ["MIN_BYTES", "PackCache", "USER_CACHE_MAX", "format_id"]
