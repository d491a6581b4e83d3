"""Streaming per-dimension statistics of one hook site: moments, extremes, histogram, outliers.

Why this shape: a batch of activations ``x [n, D]`` is reduced *in torch* (on whatever device the
model runs on, in float32) to a handful of ``[D]`` vectors - count, mean, centred power sums
``M2, M3, M4``, min/max with their token rows, outlier counts, firing counts and one pooled
histogram (passes that would usually find nothing - under/overflow, outliers - only run when
this batch's min/max say they must). Those are merged into the float64 numpy state with Chan et al.'s pairwise
update, extended to the 3rd and 4th central moments by Pebay (2008):

    n = na + nb,  d = mean_b - mean_a
    M2 = M2a + M2b + d^2 na nb / n
    M3 = M3a + M3b + d^3 na nb (na - nb) / n^2 + 3 d (na M2b - nb M2a) / n
    M4 = M4a + M4b + d^4 na nb (na^2 - na nb + nb^2) / n^3
         + 6 d^2 (na^2 M2b + nb^2 M2a) / n^2 + 4 d (na M3b - nb M3a) / n

Per-batch moments are computed in one cache-blocked pass (``SiteAccumulator._reduce``): the rows
are cut into blocks of ~``BLOCK_ELEMS`` values (256 KiB), each block is read from memory once and
centred on *its own* mean, and its powers, min/max, sign count and histogram sample are taken
while it sits in L2; the blocks are combined exactly in float64 (multi-group Chan-Pebay). So
float32 is enough inside a block and nothing like ``sum(x^2) - n mean^2`` ever cancels
catastrophically. The per-block extremes also localise the outlier counts and example look-ups
to the (block, column) pairs that can hold them, instead of gathering whole columns.

Histogram: ``BINS`` linear bins over ``[-R, R]`` where ``R = 1.25 * max|x|`` of the *first* batch
(rounded up to 2 significant digits), fixed thereafter so histograms add; values outside go to
``under`` / ``over`` counts. It counts every ``HIST_STRIDE``-th token of each batch (a fixed,
deterministic sample: histc is the costliest reduction and a shape needs no census); every
other statistic uses every token. Outliers ("massive activations"): a value counts for its dimension
when ``|x| > k * sigma_site``, ``sigma_site`` being the std of *all* values of the site (pooled
over dimensions) as accumulated so far including the current batch. Each dimension also keeps
``E`` examples of large |x| with (document index, token offset): every batch offers its arg-max
and arg-min token per dimension and the ``E`` largest |x| among all offers are kept, so the
top example is the run's largest |x| and the others come from different batches.

The state is a flat ``dict[str, np.ndarray]`` (see ``SiteAccumulator.state``), which is what the
results directory stores; everything derived (variance, kurtosis, ...) is computed on load.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

BINS = 256
EXAMPLES = 4  # top-|x| examples kept per dimension
HIST_STRIDE = 4  # the histogram counts every 4th token of a batch (histc is the costliest reduction)
BLOCK_ELEMS = 1 << 16  # values per row block of the reduction pass (256 KiB of float32: blocks stay in L2)

_WS: dict[tuple[int, str], tuple[Any, Any]] = {}


def _workspace(rows: int, dim: int, device: Any) -> tuple[Any, Any]:
    """Two scratch float32 buffers of at least ``[rows, dim]`` for the blocked reduction, shared by
    every site of that width (allocated once per width and grown when needed: no per-block
    allocator traffic, they stay cache-hot, and varying batch lengths do not pile up buffers)."""
    import torch

    key = (dim, str(device))
    ws = _WS.get(key)
    if ws is None or ws[0].shape[0] < rows:
        ws = _WS[key] = (torch.empty(rows, dim, device=device), torch.empty(rows, dim, device=device))
    return ws


def _round_up(x: float) -> float:
    """``x`` rounded up to two significant digits (readable histogram ranges)."""
    if not math.isfinite(x) or x <= 0:
        return 1.0
    e = math.floor(math.log10(x)) - 1
    return math.ceil(x / 10**e) * 10**e


def chan_merge(na: np.ndarray | float, a: tuple[np.ndarray, ...], nb: np.ndarray | float,
               b: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Merge ``(mean, M2, M3, M4)`` of two disjoint samples of sizes ``na`` and ``nb`` (Pebay)."""
    mean_a, m2a, m3a, m4a = a
    mean_b, m2b, m3b, m4b = b
    n = na + nb
    if n == 0:
        return a
    if na == 0:
        return b
    d = mean_b - mean_a
    dn = d / n
    mean = mean_a + dn * nb
    m2 = m2a + m2b + d * dn * na * nb
    m3 = (m3a + m3b + d * dn * dn * na * nb * (na - nb)
          + 3.0 * dn * (na * m2b - nb * m2a))
    m4 = (m4a + m4b + d * dn * dn * dn * na * nb * (na * na - na * nb + nb * nb)
          + 6.0 * dn * dn * (na * na * m2b + nb * nb * m2a)
          + 4.0 * dn * (na * m3b - nb * m3a))
    return mean, m2, m3, m4


def pooled_std(n: int, mean: np.ndarray, m2: np.ndarray) -> float:
    """Std of ``n`` tokens' values pooled over dimensions, from per-dimension mean and M2."""
    if n == 0:
        return 0.0
    within = float(np.mean(m2)) / n
    between = float(np.var(mean))
    return math.sqrt(max(within + between, 0.0))


class SiteAccumulator:
    """All statistics of one site (one kind at one plan position), updated batch by batch.

    ``update(x, rows)`` takes the valid-token activations ``x [n, D]`` (a torch tensor) and the
    ``[n, 2]`` int64 array of (doc index, token offset) of those tokens; it is the only method
    that touches torch. ``state()`` / ``from_state()`` round-trip through plain numpy arrays.

    ``peer`` (set under torchrun, ``activations.sharded.Yardstick``) is told each batch's count,
    mean, M2 and |x| max and answers with the run's first-batch |x| max and the pooled std of
    every batch up to this one across all processes, so the histogram range and the outlier
    threshold are the ones a single process would use.
    """

    peer: Any = None

    def __init__(self, dim: int, *, outlier_k: float = 6.0, fire: bool = False, bins: int = BINS,
                 examples: int = EXAMPLES, hist_stride: int = HIST_STRIDE, hist_range: float = 0.0) -> None:
        self.dim = dim
        self.outlier_k = float(outlier_k)
        self.fire = fire
        self.bins = bins
        self.examples = examples
        self.hist_stride = hist_stride
        self.n = 0
        z = np.zeros(dim, dtype=np.float64)
        self.mean, self.m2, self.m3, self.m4 = z.copy(), z.copy(), z.copy(), z.copy()
        self.min = np.full(dim, np.inf)
        self.max = np.full(dim, -np.inf)
        self.top_val = np.full((dim, examples), -1.0)  # |x|, descending; -1 = empty slot
        self.top_pos = np.full((dim, examples, 2), -1, dtype=np.int64)  # (doc, offset)
        self.outliers = np.zeros(dim, dtype=np.int64)
        self.fired = np.zeros(dim, dtype=np.int64) if fire else None
        self.hist = np.zeros(bins, dtype=np.int64)
        self.hist_range = float(hist_range)  # R; 0 until the first batch fixes it (given: another process's)
        self.under = 0
        self.over = 0
        self._blk = 1  # rows per block of the last _reduce (not state)

    # ------------------------------------------------------------------ derived
    def site_std(self) -> float:
        """Std of every value of the site pooled over dimensions (the outlier yardstick)."""
        return pooled_std(self.n, self.mean, self.m2)

    # ------------------------------------------------------------------ update
    def _reduce(self, x: Any) -> tuple[Any, Any, Any, Any | None, Any | None]:
        """One cache-blocked pass over ``x [n, D]`` (float32, contiguous).

        Returns ``[6, D]`` float64 (mean, M2, M3, M4 centred on the batch mean, min, max), the
        per-block minima and maxima ``[nb, D]`` (float32; they localise the outlier and example
        look-ups to the blocks that can hold them), fired counts and - once the range is fixed -
        the sampled histogram.

        Rows are taken in blocks of ~``BLOCK_ELEMS`` values, so a block is read from memory once
        and every further pass (centre, powers, min/max, sign, histc) hits the L2 cache. Each block
        is centred on *its own* mean (float32 is plenty there) and the blocks are combined exactly
        in float64 with the multi-group form of Chan-Pebay (``d_i`` = block mean - batch mean):
        ``M2 = sum M2_i + k_i d_i^2``, ``M3 = sum M3_i + 3 d_i M2_i + k_i d_i^3``,
        ``M4 = sum M4_i + 4 d_i M3_i + 6 d_i^2 M2_i + k_i d_i^4``.
        """
        import torch

        n, D = int(x.shape[0]), int(x.shape[1])
        blk = self._blk = self._block(n, D, x.device)
        nb = -(-n // blk)
        c, c2 = _workspace(min(blk, n), D, x.device)
        dev = x.device
        R = torch.empty(6, nb, D, dtype=torch.float32, device=dev)  # block mean M2 M3 M4 min max
        fired = torch.empty(nb, D, dtype=torch.float32, device=dev) if self.fire else None
        r = self.hist_range
        stride = self.hist_stride
        hist = torch.zeros(self.bins, dtype=torch.float32, device=dev) if r > 0 else None
        hb = torch.empty(self.bins, dtype=torch.float32, device=dev) if r > 0 else None
        for i in range(nb):
            xb = x[i * blk:(i + 1) * blk]
            k = int(xb.shape[0])
            cb = torch.sub(xb, torch.mean(xb, 0, out=R[0, i]), out=c[:k])
            c2b = torch.mul(cb, cb, out=c2[:k])
            torch.sum(c2b, 0, out=R[1, i])
            torch.sum(cb.mul_(c2b), 0, out=R[2, i])  # c^3 (c is not needed after this)
            torch.sum(c2b.mul_(c2b), 0, out=R[3, i])  # c^4
            torch.amin(xb, 0, out=R[4, i])
            torch.amax(xb, 0, out=R[5, i])
            if fired is not None:  # count of x > 0: sign -> {-1, 0, 1} -> clamp at 0 (comparisons to bool are slow)
                torch.sum(torch.sign(xb, out=c[:k]).clamp_(min=0), 0, out=fired[i])
            if hist is not None:
                hist += torch.histc(xb[::stride], bins=self.bins, min=-r, max=r, out=hb)
        bmin_b, bmax_b = R[4], R[5]
        Rd = R[:4].double()
        mean_i, m2_i, m3_i, m4_i = Rd[0], Rd[1], Rd[2], Rd[3]
        kk = torch.full((nb, 1), float(blk), dtype=torch.float64, device=dev)
        kk[-1] = n - blk * (nb - 1)
        bmean = (kk * mean_i).sum(0) / n
        d = mean_i - bmean
        kd2 = kk * d * d
        bm2 = (m2_i + kd2).sum(0)
        bm3 = (m3_i + d * (3.0 * m2_i + kd2)).sum(0)
        bm4 = (m4_i + d * (4.0 * m3_i + d * (6.0 * m2_i + kd2))).sum(0)
        vec = torch.stack([bmean, bm2, bm3, bm4, bmin_b.amin(0).double(), bmax_b.amax(0).double()])
        return vec, bmin_b, bmax_b, (fired.sum(0) if fired is not None else None), hist

    def _block(self, n: int, dim: int, device: Any) -> int:
        """Rows per block: ~BLOCK_ELEMS values, a multiple of hist_stride (so each block's
        ``[::hist_stride]`` rows are exactly the batch's sampled rows). Off the CPU one block is
        the whole batch (kernel launches, not cache misses, are what costs there)."""
        s = self.hist_stride
        if getattr(device, "type", "cpu") != "cpu":
            return max(s, -(-n // s) * s)
        return max(s, BLOCK_ELEMS // max(dim, 1) // s * s)

    def _gather_blocks(self, x: Any, blocks: Any, cols: Any) -> Any:
        """Values of column ``cols[j]`` in row block ``blocks[j]``: ``[len(cols), blk]`` (rows past
        the end of ``x`` read as NaN, which neither compares equal nor exceeds a threshold)."""
        import torch

        n, D = int(x.shape[0]), int(x.shape[1])
        blk = self._blk  # as chosen by the _reduce call on this x
        nbf = n // blk  # full blocks
        if nbf * blk == n:
            return x.view(nbf, blk, D)[blocks, :, cols]
        out = torch.full((int(cols.shape[0]), blk), float("nan"), dtype=x.dtype, device=x.device)
        full = blocks < nbf
        if nbf:
            out[full] = x[: nbf * blk].view(nbf, blk, D)[blocks[full], :, cols[full]]
        tail = ~full
        out[tail, : n - nbf * blk] = x[nbf * blk:][:, cols[tail]].T
        return out

    def update(self, x: Any, rows: np.ndarray) -> None:
        """Fold the batch ``x [n, D]`` (tokens ``rows [n, 2]`` = doc index, offset) into the state.

        On the CPU this runs with one torch thread (restored afterwards): the blocked pass is
        hundreds of small ops, and fork/join per op with more threads was measured 3-100x slower
        on a busy 2-core machine (a thread that is descheduled stalls every barrier)."""
        from lminspect.runtime import one_thread

        n = int(x.shape[0])
        if n == 0:
            return
        with one_thread(x.device.type == "cpu"):
            self._update(x, rows, n)

    def _update(self, x: Any, rows: np.ndarray, n: int) -> None:
        import torch

        x = x.float()
        if not x.is_contiguous():
            x = x.contiguous()
        vec, bmin_b, bmax_b, fired, hist = self._reduce(x)
        bmean_np, bm2_np, bm3_np, bm4_np, bmin_np, bmax_np = vec.cpu().numpy()  # one transfer
        absmax = max(float(bmax_np.max()), -float(bmin_np.min()))
        shared = self.peer(n, bmean_np, bm2_np, absmax) if self.peer is not None else None
        if self.hist_range == 0.0:  # first batch: fix the range, then count its sample
            self.hist_range = _round_up(1.25 * (absmax if shared is None or shared[0] is None else shared[0]))
            hist = torch.histc(x[:: self.hist_stride], bins=self.bins, min=-self.hist_range, max=self.hist_range)
        r = self.hist_range
        # under/overflow only cost a pass when something actually fell outside the range
        if bmin_np.min() < -r:
            self.under += int((x[:: self.hist_stride] < -r).sum())
        if bmax_np.max() > r:
            self.over += int((x[:: self.hist_stride] > r).sum())
        # moments (float64 from here on)
        self.mean, self.m2, self.m3, self.m4 = chan_merge(
            float(self.n), (self.mean, self.m2, self.m3, self.m4), float(n), (bmean_np, bm2_np, bm3_np, bm4_np))
        self.n += n
        self.min = np.minimum(self.min, bmin_np)
        self.max = np.maximum(self.max, bmax_np)
        self.hist += np.rint(hist.double().cpu().numpy()).astype(np.int64)
        if fired is not None:
            self.fired += np.rint(np.nan_to_num(fired.double().cpu().numpy())).astype(np.int64)
        # outliers against the pooled std including this batch; only the (row block, column) pairs
        # whose block extreme crosses the threshold are gathered (few: full passes are what costs)
        thr = self.outlier_k * (self.site_std() if shared is None else shared[1])
        if max(float(bmax_np.max()), -float(bmin_np.min())) > thr:
            babs = torch.maximum(bmax_b, bmin_b.neg())
            bc = (babs > thr).nonzero()
            if bc.shape[0]:
                v = self._gather_blocks(x, bc[:, 0], bc[:, 1])
                cnt = (v.abs() > thr).sum(1).cpu().numpy()
                np.add.at(self.outliers, bc[:, 1].cpu().numpy(), cnt.astype(np.int64))
        # examples: each batch offers its arg-max and arg-min token per dim; the E largest |x| of all
        # offers are kept (ties keep the earlier token). Only dims whose offer would enter the kept set
        # are looked up (few after the first batches): the first row block holding the column extreme
        # (from the per-block extremes), then the first matching row inside it (arg-reductions over
        # dim 0 are a slow path in torch on CPU; this touches k x blk values).
        for vals, blocks in ((bmax_np, bmax_b), (bmin_np, bmin_b)):
            a = np.abs(vals)
            cols = np.nonzero(a > self.top_val[:, -1])[0]
            if not cols.size:
                continue
            sel = torch.from_numpy(cols).to(x.device)
            bsub = blocks.index_select(1, sel)  # [nb, k] float32 block extremes
            target = torch.from_numpy(vals[cols]).to(device=x.device, dtype=x.dtype)
            first_blk = (bsub == target).to(torch.uint8).argmax(0)  # first block holding the extreme
            hit = (self._gather_blocks(x, first_blk, sel) == target[:, None]).to(torch.uint8).argmax(1)
            idx = (first_blk * self._blk + hit).cpu().numpy()
            val = np.concatenate([self.top_val[cols], a[cols, None]], axis=1)
            pos = np.concatenate([self.top_pos[cols], rows[idx][:, None, :]], axis=1)
            order = np.argsort(-val, axis=1, kind="stable")[:, : self.examples]
            self.top_val[cols] = np.take_along_axis(val, order, axis=1)
            self.top_pos[cols] = np.take_along_axis(pos, order[:, :, None], axis=1)

    # ------------------------------------------------------------------ merge
    def merge(self, other: SiteAccumulator) -> None:
        """Fold in the statistics of a disjoint set of tokens (another process's share).

        Moments by Chan-Pebay (as batches are folded in), counts, extremes and histograms add or
        take min/max, examples keep the ``E`` largest |x| of both (ties: the earlier token, by
        document index and offset). The histograms must share their range: each process's
        accumulators are created with the range the run's first batch fixed. Outlier counts add,
        each counted against its own process's running std."""
        if other.n == 0:
            return
        if self.n == 0:
            self.__dict__.update({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in other.__dict__.items()
                                  if k != "peer"})
            return
        if self.hist_range != other.hist_range or self.bins != other.bins or self.dim != other.dim:
            raise ValueError(f"cannot merge statistics with histogram ranges {self.hist_range} and {other.hist_range} "
                             f"(dims {self.dim}, {other.dim})")
        self.mean, self.m2, self.m3, self.m4 = chan_merge(
            float(self.n), (self.mean, self.m2, self.m3, self.m4), float(other.n),
            (other.mean, other.m2, other.m3, other.m4))
        self.n += other.n
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)
        self.hist = self.hist + other.hist
        self.under += other.under
        self.over += other.over
        self.outliers = self.outliers + other.outliers
        if self.fired is not None and other.fired is not None:
            self.fired = self.fired + other.fired
        val = np.concatenate([self.top_val, other.top_val], axis=1)  # [D, 2E]
        pos = np.concatenate([self.top_pos, other.top_pos], axis=1)  # [D, 2E, 2]
        order = np.lexsort((pos[:, :, 1], pos[:, :, 0], -val), axis=1)[:, : self.examples]
        self.top_val = np.take_along_axis(val, order, axis=1)
        self.top_pos = np.take_along_axis(pos, order[:, :, None], axis=1)

    # ------------------------------------------------------------------ (de)serialisation
    FIELDS = ("mean", "m2", "m3", "m4", "min", "max", "top_val", "top_pos", "outliers", "fired", "hist")

    def state(self) -> dict[str, np.ndarray]:
        out = {f: getattr(self, f) for f in self.FIELDS if getattr(self, f) is not None}
        out["scalars"] = np.array([self.n, self.under, self.over], dtype=np.int64)
        out["hist_range"] = np.array([self.hist_range, self.outlier_k, self.hist_stride], dtype=np.float64)
        return out

    @classmethod
    def from_state(cls, st: dict[str, np.ndarray]) -> SiteAccumulator:
        mean = st["mean"]
        acc = cls(mean.shape[0], outlier_k=float(st["hist_range"][1]), fire="fired" in st,
                  bins=st["hist"].shape[0], examples=st["top_val"].shape[1],
                  hist_stride=int(st["hist_range"][2]) if len(st["hist_range"]) > 2 else HIST_STRIDE)
        for f in cls.FIELDS:
            if f in st:
                setattr(acc, f, np.array(st[f]))
        acc.n, acc.under, acc.over = (int(v) for v in st["scalars"])
        acc.hist_range = float(st["hist_range"][0])
        return acc
