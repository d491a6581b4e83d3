"""Weights kept in their stored low-bit form, multiplied by a vector without a dense copy.

A ``PackedWeight`` holds one ``[out, in]`` matrix as GGUF Q8_0 / Q4_0 / Q4_1 blocks or as
bfloat16 bits, re-laid out once at load time so a decode step (one token: a matrix times one
vector) reads ~1/6 (Q4_1) to 1/2 (bf16) of the bytes of float32 and dequantizes in registers.

Layout: rows are grouped in tiles of ``TILE`` (rows padded with zeros to a whole tile), and
within a tile the row index is the fastest axis: Q8_0 ``qs [G, nb, 32, T]``, Q4 ``qs [G, nb,
16, T]`` (a byte holds element j in its low and j + 16 in its high nibble, GGUF's own
order), scales ``d`` (and Q4_1 mins ``m``) as float32 ``[G, nb, T]``, bf16 ``w [G, in, T]``.
Q4_0 (``(q - 8) * d``) is kept as Q4_1 with ``m = -8 d``, which is exact in float32.

``matvec`` runs the numba kernels of ``packed_numba`` when numba is importable, else the
torch code below; both compute sum over blocks of ``d * (q . x) + m * sum(x)``, which equals
``dequantized W @ x`` up to the order of the additions (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lminspect.compiled import load_kernels

TILE = 64  # rows per tile: 8 AVX2 registers of lanes, divides every SmolLM2/Llama width
KINDS = ("Q8_0", "Q4_0", "Q4_1", "BF16")
_BLOCK_BYTES = {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20}  # f16 d [, f16 m], then 32 or 16 bytes of quants

_KERNELS: Any = None  # the packed_numba module, or False without numba


def kernels() -> Any:
    """The compiled kernels module, or None when numba is missing or cannot compile them."""
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = load_kernels("lminspect.models.packed_numba", lambda m: m.warm_up(), "matvec", "torch")
    return _KERNELS or None


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


@dataclass
class PackedWeight:
    """One ``[out_features, in_features]`` weight in a stored low-bit form (see module doc)."""

    kind: str  # one of KINDS
    out_features: int
    in_features: int
    qs: torch.Tensor  # quants (int8 / uint8) or bf16 bits (uint16 viewed as int16)
    d: torch.Tensor | None = None  # block scales, float32 [G, nb, T]
    m: torch.Tensor | None = None  # block minimums (Q4_0 / Q4_1), float32 [G, nb, T]

    def __post_init__(self) -> None:
        # numpy views of the tensors, made once: a decode step calls matvec ~200 times
        qs = self.qs.numpy()
        self._args = ((qs.view(np.uint16),) if self.kind == "BF16"
                      else tuple(t.numpy() for t in (self.qs, self.d, self.m) if t is not None))
        self._kernel: Any = None

    @property
    def nbytes(self) -> int:
        """Bytes a matvec reads (the padded tiles included)."""
        return sum(t.numel() * t.element_size() for t in (self.qs, self.d, self.m) if t is not None)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_gguf_blocks(cls, kind: str, raw: np.ndarray, in_features: int) -> PackedWeight:
        """From a GGUF tensor's bytes ``[out, row_bytes]`` (``GGUFFile.raw``), rows in model order."""
        if kind not in _BLOCK_BYTES:
            raise ValueError(f"no packed form for {kind} (expected one of {', '.join(_BLOCK_BYTES)})")
        rows = raw.shape[0]
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
        """From bfloat16 bits ``[out, in]`` (uint16, as safetensors stores them)."""
        rows, n_in = bits.shape
        w = _tiles(np.ascontiguousarray(bits).view(np.int16), rows)
        return cls("BF16", rows, n_in, torch.from_numpy(w))

    # ------------------------------------------------------------------ use
    def dense(self) -> torch.Tensor:
        """The float32 ``[out, in]`` matrix these blocks stand for (dequantized)."""
        if self.kind == "BF16":
            w = (self.qs.to(torch.int32) << 16).view(torch.float32)
            return _untiles(w, self.out_features).contiguous()
        q = self._quants()  # [G, nb, 32, T] float32
        w = q * self.d[:, :, None]
        if self.m is not None:
            w = w + self.m[:, :, None]
        w = _untiles(w, self.out_features)  # [out, nb, 32]
        return w.reshape(self.out_features, self.in_features).contiguous()

    def _quants(self) -> torch.Tensor:
        """The quants as float32 ``[G, nb, 32, T]`` in element order (nibbles split)."""
        if self.kind == "Q8_0":
            return self.qs.float()
        q = self.qs.to(torch.int32)
        return torch.cat([q & 15, q >> 4], dim=2).float()

    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        """``W @ x`` for a float32 CPU vector ``x [in]`` -> ``[out]`` (numba, or the torch path)."""
        fn = self._kernel
        if fn is None:
            k = kernels()
            if k is None:
                return self.matvec_torch(x)
            fn = self._kernel = {"Q8_0": k.q8_matvec, "BF16": k.bf16_matvec}.get(self.kind, k.q4_matvec)
        out = np.empty(self.qs.shape[0] * TILE, np.float32)
        fn(*self._args, x.detach().contiguous().numpy(), out)
        return torch.from_numpy(out)[: self.out_features]

    def matvec_torch(self, x: torch.Tensor) -> torch.Tensor:
        """The torch version of the kernels, one tile group at a time (memory stays small)."""
        if self.kind == "BF16":
            return torch.cat([(self.qs[g].to(torch.int32) << 16).view(torch.float32).T @ x
                              for g in range(self.qs.shape[0])])[: self.out_features]
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


__all__ = ["KINDS", "TILE", "PackedWeight", "kernels"]
