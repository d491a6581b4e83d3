"""Decode kernels with integer dot products: GGUF blocks times an int8-quantized activation vector.

What llama.cpp does on CPUs, in numba: the activation vector ``x`` is quantized once per matvec
to int8 in blocks of 32 (``quantize_x``: ``dx = max|x| / 127``, ``xq = rint(x / dx)``), then
each weight (sub-)block's integer quants are dotted with ``xq`` in integers (int8 x int4/5/6/8
-> int32), and the block's float scales are applied once per block:
``y += d_w * dx * sum(q * xq)`` (``- dmin * m * sum(x)`` for the minimum kinds, with the exact
float sums of ``x``).

Accuracy: the only rounding beyond float32 is that of ``x``: ``|x - dx * xq| <= dx / 2`` per
element, so ``|y_r - (W x)_r| <= sum over blocks of dx_b / 2 * sum_{i in b} |W_ri|`` (plus
float32 rounding): llama.cpp's Q8_0 activation error; tests check this bound.

The block dots are numba intrinsics written as generic LLVM vector IR (``<32 x i8>`` loads,
nibble masks, widening multiplies, ``vector.reduce.add``): LLVM picks the host's instructions
(vpmaddwd on AVX2 / AVX-512, the NEON equivalents elsewhere); numba's own loops over 16 or 32
bytes unroll into scalar code instead. The weights are read in the file's layout, straight
from the memory map: no re-laid-out copy.
"""

from __future__ import annotations

import os

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

_I8, _I16, _I32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)


def _host_has(feature: str) -> bool:
    try:
        from llvmlite import binding

        return bool(binding.get_host_cpu_features().get(feature))
    except Exception:  # no feature map on this platform: the generic code
        return False


# x86 with AVX2 (AVX-512 machines included): quants times int8 activations with one vpmaddubsw
# (32 products summed in pairs to int16; signed quants as |q| times x with q's sign, vpsignb)
# instead of widening both to int16 first. Elsewhere the generic vector IR (the same sums).
_MADDUBS = _host_has("avx2") and not os.environ.get("LMINSPECT_GENERIC_IR")  # (tests: the generic code)

# kind ids as in packed_numba / packed.KIND_IDS
Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K = range(8)
INT_KINDS = (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K)  # the kinds with an integer kernel


# ---------------------------------------------------------------- LLVM IR helpers
def _vec(ty: ir.Type, n: int) -> ir.VectorType:
    return ir.VectorType(ty, n)


def _load(context, builder, aty, arr, off, n: int) -> ir.Value:  # noqa: ANN001
    """``n`` bytes of a 1-D uint8/int8 array from element ``off``, as ``<n x i8>`` (unaligned)."""
    a = context.make_array(aty)(context, builder, arr)
    p = builder.bitcast(builder.gep(a.data, [off]), _vec(_I8, n).as_pointer())
    return builder.load(p, align=1)


def _splat(builder, v: ir.Value, n: int) -> ir.Value:  # noqa: ANN001
    """A runtime int64 scalar as ``<n x i8>`` in every lane."""
    t = builder.insert_element(ir.Constant(_vec(_I8, n), None), builder.trunc(v, _I8), ir.Constant(_I32, 0))
    return builder.shuffle_vector(t, t, ir.Constant(_vec(_I32, n), [0] * n))


def _const(n: int, val: int) -> ir.Constant:
    return ir.Constant(_vec(_I8, n), [val] * n)


def _concat(builder, a: ir.Value, b: ir.Value, n: int) -> ir.Value:  # noqa: ANN001
    return builder.shuffle_vector(a, b, ir.Constant(_vec(_I32, 2 * n), list(range(2 * n))))


_BLOCK = {Q8_0: (1, 34), Q4_0: (1, 18), Q4_1: (1, 20), Q4_K: (8, 144), Q5_K: (8, 176), Q6_K: (8, 210)}
# (32-element chunks, bytes) per block: the kernels loop over blocks, the chunks of one unrolled


class _Block:
    """IR for one block of a row: its chunks' quants and scales (``j``, the chunk, a constant)."""

    def __init__(self, kind: int, builder, row: ir.Value, g: ir.Value) -> None:  # noqa: ANN001
        self.kind, self.b, self.row = kind, builder, row
        self.i64 = ir.IntType(64)
        self.o = builder.mul(g, self.c(_BLOCK[kind][1]))  # the block's first byte

    def c(self, v: int) -> ir.Constant:
        return ir.Constant(self.i64, v)

    def load(self, at: int, n: int = 32) -> ir.Value:
        p = self.b.gep(self.row, [self.b.add(self.o, self.c(at))])
        return self.b.load(self.b.bitcast(p, _vec(_I8, n).as_pointer()), align=1)

    def half(self, at: int) -> ir.Value:
        p = self.b.bitcast(self.b.gep(self.row, [self.b.add(self.o, self.c(at))]), ir.HalfType().as_pointer())
        return self.b.fpext(self.b.load(p, align=1), ir.FloatType())

    def byte(self, at: int) -> ir.Value:
        return self.b.load(self.b.gep(self.row, [self.b.add(self.o, self.c(at))]))

    def bits(self, v: ir.Value, shift: int, mask: int, n: int = 32) -> ir.Value:
        return self.b.and_(self.b.lshr(v, _const(n, shift)) if shift else v, _const(n, mask))

    def quants(self, j: int) -> tuple[ir.Value, bool]:
        """Chunk j's quants as ``<32 x i8>`` (and whether signed)."""
        b, kind = self.b, self.kind
        if kind == Q8_0:
            return self.load(2), True
        if kind in (Q4_0, Q4_1):
            v = self.load(2 if kind == Q4_0 else 4, 16)
            q = _concat(b, self.bits(v, 0, 15, 16), b.lshr(v, _const(16, 4)), 16)
            return (b.sub(q, _const(32, 8)), True) if kind == Q4_0 else (q, False)
        if kind in (Q4_K, Q5_K):  # 32 bytes per pair of chunks: low nibbles, then high
            v = self.bits(self.load((48 if kind == Q5_K else 16) + 32 * (j // 2)), 4 * (j % 2), 15)
            if kind == Q5_K:  # the fifth bit: bit j of qh[32]
                v = b.or_(v, b.shl(self.bits(self.load(16), j, 1), _const(32, 4)))
            return v, False
        # Q6_K: chunk j = 4 half + c: ql[64 half + 32 (c % 2)] nibble c // 2, qh[32 half] bits 2c
        half, cc = j // 4, j % 4
        lo = self.bits(self.load(64 * half + 32 * (cc % 2)), 4 * (cc // 2), 15)
        hi = self.bits(self.load(128 + 32 * half), 2 * cc, 3)
        return b.sub(b.or_(lo, b.shl(hi, _const(32, 4))), _const(32, 32)), True

    def scales(self, j: int) -> tuple[tuple[ir.Value, ...], ir.Value | None]:
        """Chunk j's float scale(s) (Q6_K: one per 16 elements) and minimum (None if none)."""
        b, kind, f32 = self.b, self.kind, ir.FloatType()
        if kind in (Q8_0, Q4_0, Q4_1):
            # Q4_1: w = d q + m, the kernel subtracts the minimums (K-quants: w = d sc q - dmin m)
            return (self.half(0),), (b.fsub(ir.Constant(f32, 0.0), self.half(2)) if kind == Q4_1 else None)
        if kind == Q6_K:
            d = self.half(208)
            return tuple(b.fmul(d, b.sitofp(self.byte(192 + 2 * j + k), f32)) for k in range(2)), None

        def six(v: ir.Value) -> ir.Value:
            return b.zext(v, self.i64)

        if j < 4:  # 6-bit scale and min of sub-block j from scales[12] at byte 4
            s = b.and_(six(self.byte(4 + j)), self.c(63))
            m = b.and_(six(self.byte(8 + j)), self.c(63))
        else:
            hi_s, lo, hi_m = six(self.byte(j)), six(self.byte(8 + j)), six(self.byte(4 + j))
            s = b.or_(b.and_(lo, self.c(15)), b.and_(b.lshr(hi_s, self.c(2)), self.c(48)))
            m = b.or_(b.lshr(lo, self.c(4)), b.and_(b.lshr(hi_m, self.c(2)), self.c(48)))
        return ((b.fmul(self.half(0), b.uitofp(s, f32)),),
                b.fmul(self.half(2), b.uitofp(m, f32)))

    def vec_scales(self, dx: ir.Value, xs: ir.Value, t0: ir.Value) -> tuple[ir.Value, ir.Value | None]:
        """K-quants: the block's chunk scales times ``dx`` as one vector (Q4_K / Q5_K ``<8 x float>``,
        Q6_K ``<16 x float>``, one per 16) and the minimum terms ``dmin m xs`` (``<8 x float>``;
        Q6_K None), from the packed bytes in vector lanes (the 6-bit unpacking of the scalar path)."""
        b, f32 = self.b, ir.FloatType()
        v8f, v16f = _vec(f32, 8), _vec(f32, 16)

        def lanes(v: ir.Value, idx: list[int], other: ir.Value | None = None) -> ir.Value:
            return b.shuffle_vector(v, v if other is None else other, ir.Constant(_vec(_I32, len(idx)), idx))

        def splat(v: ir.Value, n: int) -> ir.Value:
            t = b.insert_element(ir.Constant(_vec(f32, n), None), v, ir.Constant(_I32, 0))
            return lanes(t, [0] * n)

        def vload(base: ir.Value, n: int) -> ir.Value:
            return b.load(b.bitcast(b.gep(base, [t0]), _vec(f32, n).as_pointer()), align=4)

        dxv = vload(dx, 8)
        if self.kind == Q6_K:
            sc = b.sitofp(self.load(192, 16), v16f)
            dx16 = lanes(dxv, [i // 2 for i in range(16)])
            return b.fmul(b.fmul(splat(self.half(208), 16), sc), dx16), None
        sc = self.load(4, 16)  # scales[12] (and 4 bytes beyond, unused)
        a_, m_ = lanes(sc, [0, 1, 2, 3, 8, 9, 10, 11]), lanes(sc, [4, 5, 6, 7, 8, 9, 10, 11])
        hs, hm = lanes(sc, [0, 0, 0, 0, 0, 1, 2, 3]), lanes(sc, [0, 0, 0, 0, 4, 5, 6, 7])
        top_s = b.shl(b.lshr(hs, _const(8, 6)), _const(8, 4))
        top_m = b.shl(b.lshr(hm, _const(8, 6)), _const(8, 4))
        pick = [0, 1, 2, 3, 12, 13, 14, 15]  # sub-blocks 0-3 from the first, 4-7 from the second
        s6 = lanes(b.and_(a_, _const(8, 63)), pick, b.or_(b.and_(a_, _const(8, 15)), top_s))
        m6 = lanes(b.and_(m_, _const(8, 63)), pick, b.or_(b.lshr(m_, _const(8, 4)), top_m))
        sd = b.fmul(b.fmul(splat(self.half(0), 8), b.uitofp(s6, v8f)), dxv)
        mn = b.fmul(b.fmul(splat(self.half(2), 8), b.uitofp(m6, v8f)), vload(xs, 8))
        return sd, mn


# rows per kernel call: 1 (measured on AVX2: 4 rows sharing the widened activations ran 1.1-3.4x
# slower than one row at a time, which streams from memory as fast as the float tiles did)
ROWS = 1  # (the matvecs below have no loop for a last partial group: keep 1, or add one)


def _rowsdot(kind: int, n_rows: int):  # noqa: ANN202
    """An intrinsic ``rowsdot(raw, r0, xq, dx, xs, out)``: rows ``r0 .. r0 + n_rows`` of GGUF blocks
    ``raw [rows, row_bytes]`` times the quantized activations, into ``out``. Per 32-element chunk:
    the integer dot ``sum(q * xq)`` in 8 int32 lanes (products widened to int32, summed in
    even/odd pairs: the pmaddwd shape), scaled by the chunk's ``d * dx`` (Q6_K: per 16) into 8
    float lanes per row; one horizontal sum per row, minus the minimum terms."""
    per16 = kind == Q6_K

    @intrinsic
    def rowsdot(typingctx, raw, r0, xq, dx, xs, out):  # noqa: ANN001, ANN202
        def codegen(context, builder, sig, args):  # noqa: ANN001, ANN202
            arr = context.make_array(sig.args[0])(context, builder, args[0])
            stride = cgutils.unpack_tuple(builder, arr.strides, 2)[0]
            xp, dxp, xsp, outp = (context.make_array(sig.args[i])(context, builder, args[i]).data
                                  for i in (2, 3, 4, 5))
            rowps = [builder.gep(arr.data, [builder.mul(builder.add(args[1], ir.Constant(args[1].type, i)), stride)])
                     for i in range(n_rows)]
            f32 = ir.FloatType()
            v8f = _vec(f32, 8)
            fma = builder.module.declare_intrinsic("llvm.fmuladd.v8f32", fnty=ir.FunctionType(v8f, [v8f] * 3))
            accs = [cgutils.alloca_once_value(builder, ir.Constant(v8f, [0.0] * 8)) for _ in range(n_rows)]
            mins = [cgutils.alloca_once_value(builder, ir.Constant(f32, 0.0)) for _ in range(n_rows)]
            vmins = [cgutils.alloca_once_value(builder, ir.Constant(v8f, [0.0] * 8)) for _ in range(n_rows)]
            v32, v16, v8 = _vec(_I32, 32), _vec(_I32, 16), _vec(_I32, 8)
            if _MADDUBS:
                v32b = _vec(_I8, 32)
                maddubs = builder.module.declare_intrinsic(
                    "llvm.x86.avx2.pmadd.ub.sw", fnty=ir.FunctionType(_vec(_I16, 16), [v32b] * 2))
                psign = builder.module.declare_intrinsic("llvm.x86.avx2.psign.b", fnty=ir.FunctionType(v32b, [v32b] * 2))
                absb = builder.module.declare_intrinsic(
                    "llvm.abs.v32i8", fnty=ir.FunctionType(v32b, [v32b, ir.IntType(1)]))

            def splat(s: ir.Value) -> ir.Value:
                t = builder.insert_element(ir.Constant(v8f, None), s, ir.Constant(_I32, 0))
                return builder.shuffle_vector(t, t, ir.Constant(v8, [0] * 8))

            n_chunks = _BLOCK[kind][0]
            total = builder.udiv(builder.extract_value(context.make_array(sig.args[3])(context, builder, args[3]).shape, 0),
                                 ir.Constant(ir.IntType(64), n_chunks))
            with cgutils.for_range(builder, total) as loop:
                blks = [_Block(kind, builder, rp, loop.index) for rp in rowps]
                acc = [builder.load(a) for a in accs]
                vsc = [None] * n_rows
                if kind in (Q4_K, Q5_K, Q6_K):
                    t0 = builder.mul(loop.index, blks[0].c(n_chunks))
                    for i, blk in enumerate(blks):
                        vsc[i], mnv = blk.vec_scales(dxp, xsp, t0)
                        if mnv is not None:
                            builder.store(builder.fadd(builder.load(vmins[i]), mnv), vmins[i])
                for j in range(n_chunks):
                    t = builder.add(builder.mul(loop.index, blks[0].c(n_chunks)), blks[0].c(j))
                    xv = builder.load(builder.bitcast(builder.gep(xp, [builder.shl(t, blks[0].c(5))]),
                                                      _vec(_I8, 32).as_pointer()), align=1)
                    xw = builder.sext(xv, v32)
                    dxt = builder.load(builder.gep(dxp, [t]))
                    xst = builder.load(builder.gep(xsp, [t]))
                    for i, blk in enumerate(blks):
                        q, signed = blk.quants(j)
                        if _MADDUBS:  # u8 x s8 -> 16 pair sums (|q| <= 128, |x| <= 127: no saturation)
                            if signed:  # |q| times x with q's sign (llama.cpp's trick)
                                xs_ = builder.call(psign, [xv, q])
                                q = builder.call(absb, [q, ir.Constant(ir.IntType(1), 0)])
                            else:
                                xs_ = xv
                            p = builder.sext(builder.call(maddubs, [q, xs_]), v16)
                            isum = builder.add(builder.shuffle_vector(p, p, ir.Constant(v8, list(range(0, 16, 2)))),
                                               builder.shuffle_vector(p, p, ir.Constant(v8, list(range(1, 16, 2)))))
                            per16_lanes = [0, 0, 0, 0, 1, 1, 1, 1]  # lanes 0-3: elements 0-15
                        else:
                            p = builder.mul(builder.sext(q, v32) if signed else builder.zext(q, v32), xw)
                            pair = builder.add(builder.shuffle_vector(p, p, ir.Constant(v16, list(range(0, 32, 2)))),
                                               builder.shuffle_vector(p, p, ir.Constant(v16, list(range(1, 32, 2)))))
                            if per16:  # lanes 0-7 of pair: elements 0-15; 8-15: 16-31
                                isum = builder.shuffle_vector(pair, pair, ir.Constant(v8, [0, 2, 4, 6, 8, 10, 12, 14]))
                                isum = builder.add(isum, builder.shuffle_vector(
                                    pair, pair, ir.Constant(v8, [1, 3, 5, 7, 9, 11, 13, 15])))
                                per16_lanes = [0, 0, 0, 0, 1, 1, 1, 1]
                            else:
                                isum = builder.add(builder.shuffle_vector(pair, pair, ir.Constant(v8, list(range(8)))),
                                                   builder.shuffle_vector(pair, pair, ir.Constant(v8, list(range(8, 16)))))
                        if vsc[i] is not None:  # lanes of the block's scale vector (Q6_K: two per chunk)
                            sv = vsc[i]
                            idx = [2 * j + k for k in per16_lanes] if per16 else [j] * 8
                            sc = builder.shuffle_vector(sv, sv, ir.Constant(v8, idx))
                        else:
                            scales, mn = blk.scales(j)
                            if mn is not None:
                                builder.store(builder.fadd(builder.load(mins[i]), builder.fmul(mn, xst)), mins[i])
                            sc = splat(builder.fmul(scales[0], dxt))
                        acc[i] = builder.call(fma, [builder.sitofp(isum, v8f), sc, acc[i]])
                for a, v in zip(accs, acc, strict=True):
                    builder.store(v, a)
            for i in range(n_rows):
                a = builder.fsub(builder.load(accs[i]), builder.load(vmins[i]))
                s = builder.extract_element(a, ir.Constant(_I32, 0))
                for k in range(1, 8):
                    s = builder.fadd(s, builder.extract_element(a, ir.Constant(_I32, k)))
                s = builder.fsub(s, builder.load(mins[i]))
                builder.store(s, builder.gep(outp, [builder.add(args[1], ir.Constant(args[1].type, i))]))
            return context.get_dummy_value()
        return types.none(raw, r0, xq, dx, xs, out), codegen
    return rowsdot


_K = {k: _rowsdot(k, ROWS) for k in INT_KINDS}
rows_q8_0, rows_q4_0, rows_q4_1 = _K[Q8_0], _K[Q4_0], _K[Q4_1]
rows_q4_k, rows_q5_k, rows_q6_k = _K[Q4_K], _K[Q5_K], _K[Q6_K]


# ---------------------------------------------------------------- the activations
@njit(nogil=True, cache=True)
def quantize_x(x: np.ndarray, xq: np.ndarray, dx: np.ndarray, xs: np.ndarray) -> None:
    """x [n] float32 -> int8 ``xq`` [n] with a scale ``dx`` per 32 (``x ~ dx * xq``) and the exact
    float sums ``xs`` per 32 (for the blocks' minimums)."""
    for b in range(x.shape[0] // 32):
        amax = np.float32(0)
        s = np.float32(0)
        for i in range(32):
            v = x[b * 32 + i]
            s += v
            amax = max(amax, abs(v))
        d = amax / np.float32(127)
        if not (np.isfinite(s) and np.isfinite(d)):  # a nan / inf: the block's products are nan
            d = np.float32(np.nan)
        inv = np.float32(1) / d if d > 0 else np.float32(0)
        for i in range(32):
            xq[b * 32 + i] = np.int8(np.rint(x[b * 32 + i] * inv)) if inv > 0 else np.int8(0)
        dx[b] = d
        xs[b] = s


# ---------------------------------------------------------------- the matvec
@njit(nogil=True, cache=True)
def _rows(kind: int, raw: np.ndarray, r0: int, xq: np.ndarray, dx: np.ndarray, xs: np.ndarray,
          out: np.ndarray) -> None:
    """Rows ``r0 .. r0 + ROWS`` into ``out``."""
    if kind == Q8_0:
        rows_q8_0(raw, r0, xq, dx, xs, out)
    elif kind == Q4_0:
        rows_q4_0(raw, r0, xq, dx, xs, out)
    elif kind == Q4_1:
        rows_q4_1(raw, r0, xq, dx, xs, out)
    elif kind == Q4_K:
        rows_q4_k(raw, r0, xq, dx, xs, out)
    elif kind == Q5_K:
        rows_q5_k(raw, r0, xq, dx, xs, out)
    else:
        rows_q6_k(raw, r0, xq, dx, xs, out)


@njit(nogil=True, cache=True, parallel=True)
def matvec_quantized(kind: int, raw: np.ndarray, xq: np.ndarray, dx: np.ndarray, xs: np.ndarray,
                     out: np.ndarray, parallel: bool) -> None:
    """out[rows] = W x for GGUF block rows ``raw [rows, row_bytes]`` and an ``x`` already quantized
    by ``quantize_x`` (several matrices reading one x share that form), the rows split over numba's
    threads when ``parallel`` (else on the calling thread: waking the pool costs more than a small
    matvec)."""
    if parallel:
        for g in prange(raw.shape[0] // ROWS):
            _rows(kind, raw, g * ROWS, xq, dx, xs, out)
    else:
        for g in range(raw.shape[0] // ROWS):
            _rows(kind, raw, g * ROWS, xq, dx, xs, out)


@njit(nogil=True, cache=True)  # the rows' parallel loop is matvec_quantized's (a dispatcher of its own)
def matvec(kind: int, raw: np.ndarray, x: np.ndarray, xq: np.ndarray, dx: np.ndarray, xs: np.ndarray,
           out: np.ndarray, parallel: bool) -> None:
    """out[rows] = W x (see the module doc): ``x`` quantized into the buffers ``xq, dx, xs``, then
    ``matvec_quantized``."""
    quantize_x(x, xq, dx, xs)
    matvec_quantized(kind, raw, xq, dx, xs, out, parallel)


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernels on tiny inputs."""
    x = np.ones(256, np.float32)
    xq, dx, xs = np.empty(256, np.int8), np.empty(8, np.float32), np.empty(8, np.float32)
    out = np.empty(2, np.float32)
    for kind in INT_KINDS:
        row_bytes = {Q8_0: 272, Q4_0: 144, Q4_1: 160, Q4_K: 144, Q5_K: 176, Q6_K: 210}[kind]
        matvec(kind, np.zeros((2, row_bytes), np.uint8), x, xq, dx, xs, out, False)
