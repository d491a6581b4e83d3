"""Micro-benchmark: one decode matvec per GGUF kind on a 7B-sized matrix, G weight values / s.

``python benchmarks/bench_kernels.py [--threads N] [--rows 11008] [--cols 4096] [--repeats 7]``:
random blocks (benchmarks/shaped_files.random_blocks), the same vector; times the integer-dot
kernels (models/packed_int.py: int8 activations) beside the float kernels (models/packed_numba.py)
and, as a memory-bandwidth yardstick, torch's float32 and bfloat16 matvec of the same shape.
Medians of ``--repeats`` calls; also the largest error of each kernel relative to the int8 bound.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
import shaped_files as sf  # noqa: E402
import torch  # noqa: E402


def _median_time(fn, repeats: int) -> float:  # noqa: ANN001
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def pi_bound(kind: str, raw: np.ndarray, cols: int, dx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The int8 activations' error bound per row (models/packed_int.py's doc): sum over 32-blocks of
    dx / 2 * sum |d q| (the minimums zeroed out of the blocks), plus float32 rounding."""
    from lminspect.models.packed import PackedWeight

    w = PackedWeight.from_gguf_blocks(kind, raw, cols, tiles=False).dense().double().abs()
    at = {"Q4_1": (20, 2), "Q4_K": (144, 2), "Q5_K": (176, 2)}.get(kind)
    if at is not None:  # zero the float16 minimums (Q4_1 m, K-quants dmin): d * q alone
        raw = raw.copy()
        raw.reshape(raw.shape[0], -1, at[0])[:, :, at[1]:at[1] + 2] = 0
    dq = PackedWeight.from_gguf_blocks(kind, raw, cols, tiles=False).dense().double().abs()
    return dq.view(dq.shape[0], -1, 32).sum(2) @ dx.double() / 2 + 1e-5 * (w @ x.double().abs())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, default=11008)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--kinds", default="Q4_0,Q4_1,Q8_0,Q4_K,Q5_K,Q6_K")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import numba

    from lminspect.models import packed_int as pi
    from lminspect.models.packed import KIND_IDS, PackedWeight

    numba.set_num_threads(a.threads)
    flags = sorted({f for f in open("/proc/cpuinfo").read().split() if f.startswith(("avx", "f16c", "fma"))})
    print(f"# {a.rows} x {a.cols}, threads {a.threads}, CPU {' '.join(flags)}, load {os.getloadavg()[0]:.1f}")
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal(a.cols).astype(np.float32))
    n = a.rows * a.cols
    for dt in (torch.float32, torch.bfloat16):
        w = torch.randn(a.rows, a.cols).to(dt)
        xx = x.to(dt)
        t = _median_time(lambda w=w, xx=xx: w @ xx, a.repeats)
        print(f"torch {str(dt)[6:]:9s} {n / t / 1e9:6.2f} G values/s  {t * 1e3:7.2f} ms")
    for kind in a.kinds.split(","):
        raw = sf.random_blocks(kind, a.rows, a.cols, rng)
        p = PackedWeight.from_gguf_blocks(kind, raw, a.cols, tiles=False)
        w = p.dense().double()
        want = w @ x.double()
        xq = np.empty(a.cols, np.int8)
        dx, xs = np.empty(a.cols // 32, np.float32), np.empty(a.cols // 32, np.float32)
        pi.quantize_x(x.numpy(), xq, dx, xs)
        bound = pi_bound(kind, raw, a.cols, torch.from_numpy(dx), x)
        out = np.empty(a.rows, np.float32)
        kid = KIND_IDS[kind]

        def ours(kid=kid, raw=raw, bufs=(xq, dx, xs), out=out) -> None:  # noqa: ANN001
            pi.matvec(kid, raw, x.numpy(), *bufs, out, a.threads > 1)

        t_int = _median_time(ours, a.repeats)
        err = float(((torch.from_numpy(out).double() - want).abs() / bound).max())
        fl = PackedWeight.from_gguf_blocks(kind, raw, a.cols)  # the float kernels (Q8_0/Q4_x: tiles)
        t_f = _median_time(lambda fl=fl: fl.matvec_float(x), a.repeats)
        print(f"{kind:5s} int8 {n / t_int / 1e9:6.2f} G values/s {t_int * 1e3:7.2f} ms (err/bound {err:.2f})"
              f" | float{' tiles' if fl.tiled else ''} {n / t_f / 1e9:6.2f} G values/s {t_f * 1e3:7.2f} ms"
              f" | x{t_f / t_int:.2f}")


if __name__ == "__main__":
    main()
