"""A small, strict safetensors reader on numpy memory maps.

Why our own reader: ``safetensors``' numpy path copies every tensor (peak RAM twice the
file), and its torch path has no bfloat16 story for numpy users. Here opening a file
reads the 8-byte length and the JSON header only; tensors are views on one ``np.memmap``
(zero copy for F32/F16/ints), BF16 and F8 are widened to float32 per tensor on access.

Validation follows the reference (Rust) reader so a corrupt file fails at open time with
one line naming the file and the problem, and never makes us allocate more than the file:
header length capped at 100 MB and checked against the file size, JSON must parse to an
object, dtypes known, shapes non-negative ints, offsets contiguous from 0 without gaps or
overlaps, byte length == numel * itemsize, and no trailing bytes after the last tensor.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from math import prod
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from lminspect.errors import FormatError

MAX_HEADER = 100_000_000  # same cap as the reference reader

# safetensors dtype -> (numpy storage dtype, itemsize)
STORAGE: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "F8_E4M3": np.dtype("u1"),
    "F8_E5M2": np.dtype("u1"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}

# numpy dtype -> safetensors dtype name, for writers
NP_TO_ST = {
    np.dtype("float64"): "F64",
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
    np.dtype("int16"): "I16",
    np.dtype("int8"): "I8",
    np.dtype("uint8"): "U8",
    np.dtype("bool"): "BOOL",
}


class Entry(NamedTuple):
    """One tensor's header record, offsets absolute in the file (immutable).

    A NamedTuple rather than a frozen dataclass: building one is ~3x cheaper, which
    matters when opening is a header parse. ``file`` is the file holding the tensor,
    so the store can use these records as its entries directly.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    nbytes: int
    file: Path | None = None


_ITEMSIZE = {k: v.itemsize for k, v in STORAGE.items()}
_MAX_NUMEL = 2**60  # numel * 8 > 2**63 overflows the reference reader's checked_mul


def _fail(path: str | os.PathLike[str], msg: str) -> FormatError:
    return FormatError(f"{Path(path)}: not a valid safetensors file: {msg}")


def read_header(path: str | os.PathLike[str]) -> tuple[list[Entry], dict[str, str]]:
    """Parse and validate the header; return entries in file order and ``__metadata__``."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            header, base, meta = _read_open(path, f, os.fstat(f.fileno()).st_size, f.read(8))
    except OSError as e:
        raise FormatError(f"{path}: cannot read: {e.strerror or e}") from None
    return list(_build_entries(header, base, path).values()), meta


def _read_fd(fd: int, n: int) -> bytes:
    """Up to ``n`` bytes from a raw file descriptor (short only at end of file)."""
    b = os.read(fd, n)
    while len(b) < n:
        more = os.read(fd, n - len(b))
        if not more:
            break
        b += more
    return b


def _read_open(path: str | os.PathLike[str], f: Any, size: int, head: bytes) -> tuple[dict, int, dict[str, str]]:
    """Read and validate the header of an open file (a file object, or a raw descriptor)
    whose first 8 bytes (``head``) are already read: ``(records by name, data start,
    __metadata__)``."""
    if len(head) < 8:
        raise _fail(path, f"file is {size} bytes, too small for the 8-byte header length")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER:
        raise _fail(path, f"header length {n} exceeds the {MAX_HEADER}-byte limit")
    if 8 + n > size:
        raise _fail(path, f"header length {n} is larger than the file ({size} bytes)")
    raw = _read_fd(f, n) if type(f) is int else f.read(n)
    try:
        text = raw.decode("utf-8")
        from lminspect.validate import MAX_JSON_DEPTH, json_depth

        if text.count("[") + text.count("{") > MAX_JSON_DEPTH and json_depth(text) > MAX_JSON_DEPTH:
            raise _fail(path, f"header nests deeper than {MAX_JSON_DEPTH} levels")
        header = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise _fail(path, f"header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise _fail(path, "header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        raise _fail(path, "__metadata__ is not an object")
    base = 8 + n
    if not _valid_fast(header, base, size):
        _entries_checked(path, header, base, size)  # raises, naming the problem
    return header, base, meta


def _valid_fast(header: dict, base: int, size: int) -> bool:
    """The checks of ``_entries_checked`` in one loop, without messages or entries.

    False when any check fails (the caller then runs ``_entries_checked``, which names
    the problem). Offsets are validated by one sort of the (begin, end) pairs.
    """
    spans = []
    itemsizes = _ITEMSIZE
    try:
        for rec in header.values():
            shape = rec["shape"]
            b, e = rec["data_offsets"]
            if type(shape) is not list or type(b) is not int or type(e) is not int or b < 0:
                return False
            for d in shape:
                if type(d) is not int or d < 0:
                    return False
            numel = prod(shape)
            if numel > _MAX_NUMEL or (numel == 0 and _overflows(shape)):
                return False
            if e - b != numel * itemsizes[rec["dtype"]]:  # also rules out end < begin
                return False
            spans.append((b, e))
    except (KeyError, TypeError, ValueError):  # not a dict, key missing, bad offsets, unhashable dtype
        return False
    # contiguous from 0, no gaps or overlaps
    spans.sort()
    expect = 0
    for b, e in spans:
        if b != expect:
            return False
        expect = e
    return base + expect == size


def _build_entries(header: dict, base: int, path: Path) -> dict[str, Entry]:
    """name -> Entry for a validated header, in header (= the file's listing) order."""
    new = tuple.__new__
    out = {}
    for name, rec in header.items():
        b, e = rec["data_offsets"]
        out[name] = new(Entry, (name, rec["dtype"], tuple(rec["shape"]), base + b, e - b, path))
    return out


def _overflows(shape: list[int]) -> bool:
    numel = 1
    for d in shape:
        numel *= d
        if numel > _MAX_NUMEL:
            return True
    return False


def _entries_checked(path: Path, header: dict, base: int, size: int) -> list[Entry]:
    """Validate every record with a message naming the first problem; entries in header order."""
    entries: list[tuple[int, int, Entry]] = []
    for name, rec in header.items():
        if not isinstance(rec, dict):
            raise _fail(path, f"tensor {name!r}: record is not an object")
        dtype = rec.get("dtype")
        shape = rec.get("shape")
        offs = rec.get("data_offsets")
        if dtype not in STORAGE:
            raise _fail(path, f"tensor {name!r}: unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise _fail(path, f"tensor {name!r}: bad shape {shape!r}")
        if (
            not isinstance(offs, list)
            or len(offs) != 2
            or not all(type(o) is int and o >= 0 for o in offs)
        ):
            raise _fail(path, f"tensor {name!r}: bad data_offsets {offs!r}")
        b, e = offs
        if e < b:
            raise _fail(path, f"tensor {name!r}: data_offsets end {e} < begin {b}")
        numel = 1
        for d in shape:
            numel *= d
            if numel * 8 > 2**63:  # the reference reader's checked_mul would overflow
                raise _fail(path, f"tensor {name!r}: shape {shape} overflows")
        want = numel * STORAGE[dtype].itemsize
        if e - b != want:
            raise _fail(
                path,
                f"tensor {name!r}: {e - b} bytes in data_offsets but {dtype}{shape} needs {want}",
            )
        entries.append((b, e, Entry(name, dtype, tuple(shape), base + b, want, path)))
    entries.sort(key=lambda t: (t[0], t[1]))
    expect = 0
    for b, e, ent in entries:
        if b != expect:
            what = "overlaps the previous tensor" if b < expect else f"leaves a gap (expected {expect})"
            raise _fail(path, f"tensor {ent.name!r}: data_offsets [{b}, {e}] {what}")
        expect = e
    if base + expect > size:
        raise _fail(
            path, f"data ends at byte {base + expect} but the file has {size} bytes (truncated?)"
        )
    if base + expect < size:
        raise _fail(path, f"{size - base - expect} trailing bytes after the last tensor")
    # header order (json keeps insertion order) is the file's own listing order
    order = {name: i for i, name in enumerate(header)}
    return sorted((t[2] for t in entries), key=lambda x: order[x.name])


class SafetensorsFile:
    """Lazy access to one safetensors file: header parsed at open, data on a memmap."""

    def __init__(self, path: str | os.PathLike[str], *, _opened: tuple[Any, int, bytes] | None = None) -> None:
        # the Path is built on first use (a cold Path() costs as much as a small header)
        self._path: Any = path
        try:
            if _opened is None:
                with open(path, "rb") as f:
                    h = _read_open(path, f, os.fstat(f.fileno()).st_size, f.read(8))
            else:  # (open file or descriptor, its size, its first 8 bytes), from open_store
                f, size, head = _opened
                h = _read_open(path, f, size, head)
        except OSError as e:
            raise FormatError(f"{Path(path)}: cannot read: {e.strerror or e}") from None
        self._header, self._base, self.metadata = h
        self._entries: dict[str, Entry] | None = None
        self._mm: np.memmap | None = None

    @property
    def path(self) -> Path:
        if not isinstance(self._path, Path):
            self._path = Path(self._path)
        return self._path

    @property
    def entries(self) -> dict[str, Entry]:
        """name -> Entry in file order (built on first use; the header is validated at open)."""
        if self._entries is None:
            self._entries = _build_entries(self._header, self._base, self.path)
        return self._entries

    def names(self) -> Any:
        """The tensor names in file order (a keys view), without building the entries."""
        return self._header.keys()

    def _map(self) -> np.memmap:
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="c")  # copy-on-write: writable, never touches the file
        return self._mm

    def raw(self, name: str) -> np.ndarray:
        """The stored bytes viewed with the storage dtype (uint16 for BF16), no copy."""
        e = self.entries[name]
        st = STORAGE[e.dtype]
        if e.nbytes == 0:
            return np.empty(e.shape, dtype=st)
        return self._map()[e.start : e.start + e.nbytes].view(st).reshape(e.shape)

    def get(self, name: str) -> np.ndarray:
        """The tensor as numpy: a memmap view, or float32 for BF16/F8 (numpy has neither)."""
        e = self.entries[name]
        a = self.raw(name)
        if e.dtype == "BF16":
            return bf16_to_f32(a)
        if e.dtype in ("F8_E4M3", "F8_E5M2"):
            import torch

            tdt = torch.float8_e4m3fn if e.dtype == "F8_E4M3" else torch.float8_e5m2
            return torch.from_numpy(np.ascontiguousarray(a)).view(tdt).float().numpy()
        return a


def bf16_to_f32(a: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bits (uint16) to float32: the high half of an f32 is a bf16."""
    return (a.astype(np.uint32) << 16).view(np.float32)


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: dict[str, np.ndarray],
    metadata: dict[str, str] | None = None,
    bf16: set[str] | None = None,
) -> None:
    """Write numpy tensors as safetensors; ``bf16`` names uint16 arrays holding bfloat16 bits."""
    bf16 = bf16 or set()
    items = []
    for name, a in tensors.items():
        dt = "BF16" if name in bf16 else NP_TO_ST.get(np.dtype(a.dtype))
        if dt is None:
            raise FormatError(f"{path}: cannot store dtype {a.dtype} for tensor {name!r}")
        items.append((name, dt, tuple(a.shape), lambda a=a: a))
    write_safetensors_lazy(path, items, metadata)


def write_safetensors_lazy(
    path: str | os.PathLike[str],
    items: list[tuple[str, str, tuple[int, ...], Callable[[], np.ndarray]]],
    metadata: dict[str, str] | None = None,
) -> None:
    """Stream tensors to a safetensors file one at a time: ``(name, dtype, shape, make_array)``.

    The header is written first from the declared shapes, so peak memory is one tensor.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    off = 0
    for name, dt, shape, _ in items:
        n = STORAGE[dt].itemsize
        for d in shape:
            n *= d
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-(len(hb) + 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for name, dt, shape, make in items:
            a = np.ascontiguousarray(make())
            want = STORAGE[dt]
            if a.dtype.itemsize != want.itemsize or tuple(a.shape) != tuple(shape):
                raise FormatError(f"{path}: tensor {name!r} is {a.dtype}{a.shape}, declared {dt}{shape}")
            f.write(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
