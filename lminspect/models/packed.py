"""Weights kept in their stored form: multiplied by a vector, or dequantized a few rows at a time.

A ``PackedWeight`` holds one ``[out, in]`` matrix as it is stored, in one of two layouts:

- **native** (bfloat16, float16, GGUF K-quants Q4_K/Q5_K/Q6_K, Q5_0/Q5_1, and any other GGUF
  type gguf-py can dequantize): ``raw`` is the file's own rows, a view of the memory map, so
  holding the weight costs no memory of its own (the pages are the file's: shared, evictable).
- **tiles** (GGUF Q8_0 / Q4_0 / Q4_1 linear layers, the layout the fast kernels of small models
  were tuned on): re-laid out once at load time in tiles of ``TILE`` rows with the row index
  innermost: Q8_0 ``qs [G, nb, 32, T]``, Q4 ``qs [G, nb, 16, T]`` (a byte holds element j in its
  low and j + 16 in its high nibble, GGUF's own order), scales ``d`` (and Q4_1 mins ``m``) as
  float32 ``[G, nb, T]``. Q4_0 (``(q - 8) * d``) is kept as Q4_1 with ``m = -8 d``, exact in
  float32. This copy costs about the tensor's stored size.

``matvec`` (a decode step: one vector) runs, for GGUF Q8_0/Q4_0/Q4_1/Q4_K/Q5_K/Q6_K rows, the
integer-dot kernels of ``packed_int`` (the vector quantized to int8 per 32 values, as llama.cpp
does: the error bound is in that module's doc); for the other kinds, with ``EXACT_DECODE``
(``LMINSPECT_EXACT_DECODE=1``), or for tiles, the float kernels of ``packed_numba`` (float32
activations: the dequantized matrix times x up to the order of additions); torch / gguf-py code
without numba. ``dense(rows)`` gives exact float32 rows (equal
bit for bit to gguf-py's ``dequantize``), which is how prefill and batches use the weight: a
chunk of rows at a time, never the whole model.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from lminspect.compiled import load_kernels

TILE = 64  # rows per tile: 8 AVX2 registers of lanes, divides every SmolLM2/Llama width
PACK_FORMAT = 1  # version of the tiles' layout: packcache keys its files on it (bump on a change)
TILED = ("Q8_0", "Q4_0", "Q4_1")  # kinds that linear layers re-lay out in tiles
NATIVE = ("BF16", "F16", "Q4_K", "Q5_K", "Q6_K", "Q5_0", "Q5_1")  # kernels on the file's rows
KINDS = TILED + NATIVE
# GGUF kinds the numba kernels read in the file's layout (packed_numba's kind ids)
KIND_IDS = {"Q8_0": 0, "Q4_0": 1, "Q4_1": 2, "Q5_0": 3, "Q5_1": 4, "Q4_K": 5, "Q5_K": 6, "Q6_K": 7}
INT_KINDS = ("Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K")  # GGUF kinds with integer-dot kernels
_BLOCK_BYTES = {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20}  # f16 d [, f16 m], then 32 or 16 bytes of quants
# dense rows made at a time for prefill / batches: 8 MB of float32, so the rows just dequantized
# are still in cache when the matmul reads them (one pass over memory, not three)
CHUNK_ELEMENTS = 1 << 21
# matrices smaller than this run their decode matvec on the calling thread (waking numba's pool
# for a few hundred KB costs more than it saves)
PARALLEL_BYTES = 1 << 20

_KERNELS: Any = None  # the packed_numba module, or False without numba
_INT_KERNELS: Any = None  # the packed_int module, or False
# float32 activations in every decode matvec (no int8 rounding of x): slower, for comparisons
EXACT_DECODE = os.environ.get("LMINSPECT_EXACT_DECODE", "") not in ("", "0")
_LOCAL = threading.local()


def kernels() -> Any:
    """The compiled kernels module, or None when numba is missing or cannot compile them."""
    global _KERNELS
    if _KERNELS is None:
        _quiet_threads()
        _KERNELS = load_kernels("lminspect.models.packed_numba", lambda m: m.warm_up(), "matvec", "torch")
    return _KERNELS or None


def int_kernels() -> Any:
    """The integer-dot decode kernels (``packed_int``), or None without numba / when they fail to compile."""
    global _INT_KERNELS
    if _INT_KERNELS is None:
        if kernels() is None:
            _INT_KERNELS = False
        else:
            _INT_KERNELS = load_kernels("lminspect.models.packed_int", lambda m: m.warm_up(),
                                        "integer matvec", "the float kernels")
    return _INT_KERNELS or None


def _quiet_threads() -> None:
    """numba's workqueue thread pool (threads sleep between kernels) unless the user chose one.

    A decode step alternates numba kernels and small torch ops; two OpenMP runtimes whose idle
    threads spin would each steal the cores the other's threads need (measured on 2 cores: a 7B
    prefill 3-6x slower). The CLI also asks OpenMP to wait passively (``OMP_WAIT_POLICY``)."""
    import os

    try:
        import numba
    except ImportError:
        return
    if not os.environ.get("NUMBA_THREADING_LAYER"):
        numba.config.THREADING_LAYER = "workqueue"


def _threads() -> int:
    """numba's kernels use as many threads as torch does (``--threads``, OMP_NUM_THREADS): that number."""
    import numba

    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if getattr(_LOCAL, "threads", None) != n:
        numba.set_num_threads(n)
        _LOCAL.threads = n
    return n


def scratch(n: int) -> np.ndarray:
    """A float32 buffer of ``n`` elements reused by this thread (prefill's dequantized rows)."""
    buf = getattr(_LOCAL, "buf", None)
    if buf is None or buf.size < n:
        buf = _LOCAL.buf = np.empty(n, np.float32)
    return buf[:n]


def _new_x_buffers(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Buffers for an activation vector of ``n`` quantized to int8: the values, a scale and a
    float sum per 32 (``packed_int.quantize_x``)."""
    return np.empty(n, np.int8), np.empty(n // 32, np.float32), np.empty(n // 32, np.float32)


def _x_buffers(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_new_x_buffers(n)`` this thread reuses."""
    bufs = getattr(_LOCAL, "xq", None)
    if bufs is None or bufs[0].shape[0] != n:
        bufs = _LOCAL.xq = _new_x_buffers(n)
    return bufs


def _tiles(a: np.ndarray, rows: int) -> np.ndarray:
    """[rows, ...] -> [G, ..., T]: pad rows to whole tiles, move the row index innermost."""
    pad = -rows % TILE
    if pad:
        a = np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)])
    t = a.reshape(-1, TILE, *a.shape[1:])
    return np.ascontiguousarray(np.moveaxis(t, 1, -1))


def _untiles(a: torch.Tensor, rows: int) -> torch.Tensor:
    """Inverse of ``_tiles``: [G, ..., T] -> [rows, ...]."""
    t = a.movedim(-1, 1)
    return t.reshape(-1, *t.shape[2:])[:rows]


def _plain(a: np.ndarray) -> np.ndarray:
    """A base-class view (numba does not take np.memmap), rows contiguous."""
    a = a.view(np.ndarray) if isinstance(a, np.memmap) else a
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


@dataclass
class PackedWeight:
    """One ``[out_features, in_features]`` weight in a stored form (see module doc)."""

    kind: str  # "BF16", "F16", or a GGUF type name ("Q4_K", ...)
    out_features: int
    in_features: int
    qs: torch.Tensor | None = None  # tiles: quants (int8 / uint8)
    d: torch.Tensor | None = None  # tiles: block scales, float32 [G, nb, T]
    m: torch.Tensor | None = None  # tiles: block minimums (Q4_0 / Q4_1), float32 [G, nb, T]
    raw: np.ndarray | None = None  # native: the file's rows (uint16 bits, or GGUF block bytes)

    def __post_init__(self) -> None:
        # numpy views of the tiles, made once: a decode step calls matvec ~200 times
        self._args = (() if self.qs is None
                      else tuple(t.numpy() for t in (self.qs, self.d, self.m) if t is not None))
        self._kernel: Any = None

    @property
    def tiled(self) -> bool:
        return self.qs is not None

    @property
    def nbytes(self) -> int:
        """Bytes a matvec reads (the padded tiles included)."""
        if self.raw is not None:
            return int(self.raw.nbytes)
        return sum(t.numel() * t.element_size() for t in (self.qs, self.d, self.m) if t is not None)

    @property
    def owned_bytes(self) -> int:
        """Memory this weight holds beyond the file's mapped pages (the tiles' copy)."""
        return 0 if self.raw is not None else self.nbytes

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_gguf_blocks(cls, kind: str, raw: np.ndarray, in_features: int, tiles: bool = True) -> PackedWeight:
        """From a GGUF tensor's bytes ``[out, row_bytes]`` (``GGUFFile.raw``), rows in model order.
        Q8_0/Q4_0/Q4_1 become tiles when ``tiles`` (linear layers); everything else stays the
        file's rows (an embedding gathers rows, so it keeps them too)."""
        rows = raw.shape[0]
        if kind not in _BLOCK_BYTES or not tiles:
            return cls(kind, rows, in_features, raw=_plain(raw))
        nb = in_features // 32
        blocks = np.ascontiguousarray(raw).reshape(rows, nb, _BLOCK_BYTES[kind])
        d = blocks[:, :, 0:2].copy().view(np.float16)[..., 0].astype(np.float32)  # [rows, nb]
        if kind == "Q8_0":
            qs = blocks[:, :, 2:].view(np.int8)  # [rows, nb, 32]
            return cls(kind, rows, in_features, torch.from_numpy(_tiles(qs, rows)),
                       torch.from_numpy(_tiles(d, rows)))
        if kind == "Q4_1":
            m = blocks[:, :, 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
            qs = blocks[:, :, 4:]
        else:  # Q4_0: (q - 8) d == q d + (-8 d) exactly (d has 11 significant bits)
            m = d * np.float32(-8)
            qs = blocks[:, :, 2:]
        return cls(kind, rows, in_features, torch.from_numpy(_tiles(qs, rows)),
                   torch.from_numpy(_tiles(d, rows)), torch.from_numpy(_tiles(m, rows)))

    @classmethod
    def from_bf16(cls, bits: np.ndarray) -> PackedWeight:
        """From bfloat16 bits ``[out, in]`` (uint16, as safetensors stores them): no copy."""
        rows, n_in = bits.shape
        return cls("BF16", rows, n_in, raw=_plain(bits).view(np.int16))

    @classmethod
    def from_f16(cls, a: np.ndarray) -> PackedWeight:
        """From float16 ``[out, in]``: no copy."""
        rows, n_in = a.shape
        return cls("F16", rows, n_in, raw=_plain(a).view(np.uint16))

    # ------------------------------------------------------------------ dense rows
    def dense(self, rows: slice | np.ndarray | None = None, out: np.ndarray | None = None) -> torch.Tensor:
        """Exact float32 rows (all, a slice, or row indices) of the matrix these bytes stand for;
        written into ``out`` (a float32 buffer of the right size) when given."""
        if self.raw is None:
            w = self._dense_tiles()
            w = w if rows is None else w[torch.as_tensor(rows) if not isinstance(rows, slice) else rows]
            if out is not None:
                o = torch.from_numpy(out.reshape(w.shape))
                o.copy_(w)
                return o
            return w
        raw = self.raw if rows is None else self.raw[rows]
        n = raw.shape[0]
        dst = np.empty((n, self.in_features), np.float32) if out is None else out.reshape(n, self.in_features)
        dst_t = torch.from_numpy(dst)
        if self.kind == "BF16":
            dst_t.copy_(torch.from_numpy(np.ascontiguousarray(raw)).view(torch.bfloat16))
        elif self.kind == "F16":
            dst_t.copy_(torch.from_numpy(np.ascontiguousarray(raw)).view(torch.float16))
        else:
            k = kernels()
            if k is not None and self.kind in KIND_IDS:
                _threads()
                k.dequant(KIND_IDS[self.kind], np.ascontiguousarray(raw), dst)
            else:
                from gguf.constants import GGMLQuantizationType
                from gguf.quants import dequantize

                dst[:] = dequantize(np.asarray(raw), GGMLQuantizationType[self.kind]).reshape(n, self.in_features)
        return dst_t

    def _dense_tiles(self) -> torch.Tensor:
        q = self._quants()  # [G, nb, 32, T] float32
        w = q * self.d[:, :, None]
        if self.m is not None:
            w = w + self.m[:, :, None]
        w = _untiles(w, self.out_features)  # [out, nb, 32]
        return w.reshape(self.out_features, self.in_features).contiguous()

    def _quants(self) -> torch.Tensor:
        """The tiles' quants as float32 ``[G, nb, 32, T]`` in element order (nibbles split)."""
        if self.kind == "Q8_0":
            return self.qs.float()
        q = self.qs.to(torch.int32)
        return torch.cat([q & 15, q >> 4], dim=2).float()

    def chunk_rows(self) -> int:
        """Rows per dense chunk (at most ``CHUNK_ELEMENTS`` values; the whole matrix when it fits)."""
        return max(1, min(self.out_features, CHUNK_ELEMENTS // max(1, self.in_features)))

    # ------------------------------------------------------------------ use
    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        """``W @ x`` for a float32 CPU vector ``x [in]`` -> ``[out]``: the integer-dot kernels on GGUF
        rows (int8 activations), else the float kernels (see the module doc)."""
        k = self._int_kernels()
        if k is not None:
            out = np.empty(self.out_features, np.float32)
            k.matvec(KIND_IDS[self.kind], self.raw, x.detach().contiguous().numpy(),
                     *_x_buffers(self.in_features), out, self._parallel())
            return torch.from_numpy(out)
        return self.matvec_float(x)

    def _int_kernels(self) -> Any:
        """``packed_int`` when this weight decodes on the integer-dot kernels (``matvec`` and
        ``bound_matvec`` alike, so both give the same numbers), else None."""
        if self.raw is None or self.kind not in INT_KINDS or EXACT_DECODE:
            return None
        return int_kernels()

    def _parallel(self) -> bool:
        """Split the rows over numba's threads (only matrices worth waking the pool for)."""
        return self.raw.nbytes >= PARALLEL_BYTES and _threads() > 1

    def matvec_float(self, x: torch.Tensor) -> torch.Tensor:
        """``W @ x`` with float32 activations (numba's float kernels, or the torch path)."""
        fn = self._kernel
        if fn is None:
            k = kernels()
            if k is None or (self.raw is not None and self.kind not in KIND_IDS
                             and self.kind not in ("BF16", "F16")):
                return self.matvec_torch(x)
            if self.tiled:
                fn = k.q8_matvec if self.kind == "Q8_0" else k.q4_matvec
            elif self.kind == "BF16":
                fn = k.bf16_matmul
            elif self.kind == "F16":
                fn = k.f16_matmul
            else:
                kid = KIND_IDS[self.kind]
                fn = lambda raw, xx, out: k.matmul(kid, raw, xx, out)  # noqa: E731
            self._kernel = fn
        xn = x.detach().contiguous().numpy()
        if self.tiled:
            out = np.empty(self.qs.shape[0] * TILE, np.float32)
            fn(*self._args, xn, out)
            return torch.from_numpy(out)[: self.out_features]
        _threads()
        out = np.empty((1, self.out_features), np.float32)
        fn(self.raw, xn.reshape(1, -1), out)
        return torch.from_numpy(out[0])

    def matvec_torch(self, x: torch.Tensor) -> torch.Tensor:
        """The kernels' arithmetic in torch (no numba): a chunk of rows, or a tile group, at a time."""
        if self.raw is not None:
            step = self.chunk_rows()
            return torch.cat([self.dense(slice(r, r + step)) @ x for r in range(0, self.out_features, step)])
        xb = x.view(-1, 32)  # [nb, 32]
        xs = xb.sum(1)  # [nb]
        parts = []
        for g in range(0, self.qs.shape[0], 16):
            q = PackedWeight(self.kind, 0, self.in_features, self.qs[g:g + 16])._quants()  # [g, nb, 32, T]
            s = torch.einsum("gbjt,bj->gbt", q, xb)
            y = self.d[g:g + 16] * s
            if self.m is not None:
                y = y + self.m[g:g + 16] * xs[:, None]
            parts.append(y.sum(1).reshape(-1))
        return torch.cat(parts)[: self.out_features]

    def bound_matvec(self, x: np.ndarray, preps: dict[int, Callable[[], None]] | None = None
                     ) -> tuple[Callable[[], None], np.ndarray] | None:
        """``(call, y)``: each ``call()`` writes ``W @ x`` into ``y [out]`` (owned here), reading the
        float32 buffer ``x [in]`` as it is then: the kernel ``matvec`` runs, bound once to its
        buffers (and to the thread count of now), so a decode step (models/decode.py) pays no
        allocation or argument handling per matrix. None without the compiled kernels for this kind.

        ``preps``: the integer-dot kernels read x quantized to int8; bindings given the same dict
        share that form for the same ``x``: ``preps[id(x)]`` is then the call that quantizes x, the
        returned calls do not, and the caller runs ``preps[id(x)]()`` each time x changes, before them."""
        k = kernels()
        if k is None or (self.raw is not None and self.kind not in KIND_IDS and self.kind not in ("BF16", "F16")):
            return None
        ik = self._int_kernels()
        if ik is not None:
            kid, parallel = KIND_IDS[self.kind], self._parallel()
            out = np.empty(self.out_features, np.float32)
            got = preps.get(id(x)) if preps is not None else None
            if got is None:
                bufs = _new_x_buffers(self.in_features)
                if preps is None:  # x quantized by this call itself
                    return partial(ik.matvec, kid, self.raw, x, *bufs, out, parallel), out
                got = preps[id(x)] = partial(ik.quantize_x, x, *bufs)
            return partial(ik.matvec_quantized, kid, self.raw, *got.args[1:], out, parallel), out
        if self.tiled:
            out = np.empty(self.qs.shape[0] * TILE, np.float32)
            fn = k.q8_matvec if self.kind == "Q8_0" else k.q4_matvec
            return partial(fn, *self._args, x, out), out[: self.out_features]
        out = np.empty((1, self.out_features), np.float32)
        x2 = x.reshape(1, -1)
        if self.kind == "BF16":
            call = partial(k.bf16_matmul, self.raw, x2, out)
        elif self.kind == "F16":
            call = partial(k.f16_matmul, self.raw, x2, out)
        else:
            call = partial(k.matmul, KIND_IDS[self.kind], self.raw, x2, out)
        return call, out[0]


__all__ = ["CHUNK_ELEMENTS", "INT_KINDS", "KINDS", "NATIVE", "PACK_FORMAT", "TILE", "TILED", "PackedWeight", "int_kernels",
           "kernels", "scratch"]
