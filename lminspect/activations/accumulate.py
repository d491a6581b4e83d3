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

Per-batch moments are *centred on the batch mean* before they are raised to powers, so float32
is enough inside a batch and nothing like ``sum(x^2) - n mean^2`` ever cancels catastrophically.

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


class SiteAccumulator:
    """All statistics of one site (one kind at one plan position), updated batch by batch.

    ``update(x, rows)`` takes the valid-token activations ``x [n, D]`` (a torch tensor) and the
    ``[n, 2]`` int64 array of (doc index, token offset) of those tokens; it is the only method
    that touches torch. ``state()`` / ``from_state()`` round-trip through plain numpy arrays.
    """

    def __init__(self, dim: int, *, outlier_k: float = 6.0, fire: bool = False, bins: int = BINS,
                 examples: int = EXAMPLES, hist_stride: int = HIST_STRIDE) -> None:
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
        self.hist_range = 0.0  # R; 0 until the first batch fixes it
        self.under = 0
        self.over = 0

    # ------------------------------------------------------------------ derived
    def site_std(self) -> float:
        """Std of every value of the site pooled over dimensions (the outlier yardstick)."""
        if self.n == 0:
            return 0.0
        within = float(np.mean(self.m2)) / self.n
        between = float(np.var(self.mean))
        return math.sqrt(max(within + between, 0.0))

    # ------------------------------------------------------------------ update
    def update(self, x: Any, rows: np.ndarray) -> None:
        import torch

        n = int(x.shape[0])
        if n == 0:
            return
        x = x.float()
        bmean = x.mean(0)
        c = x - bmean
        c2 = c * c
        bm2 = c2.sum(0)
        bm3 = (c2 * c).sum(0)
        bm4 = (c2 * c2).sum(0)
        del c, c2
        bmax = x.amax(0)  # values only: reductions with indices over dim 0 are ~30x slower on CPU
        bmin = x.amin(0)
        fired = (x > 0).sum(0, dtype=torch.int32) if self.fire else None
        vec = torch.stack([bmean, bm2, bm3, bm4, bmin, bmax]).double().cpu().numpy()  # one transfer
        bmean_np, bm2_np, bm3_np, bm4_np, bmin_np, bmax_np = vec
        if self.hist_range == 0.0:
            self.hist_range = _round_up(1.25 * max(float(bmax_np.max()), -float(bmin_np.min())))
        r = self.hist_range
        xs = x[:: self.hist_stride]  # histogram sample: every hist_stride-th token (a view, no copy)
        hist = torch.histc(xs, bins=self.bins, min=-r, max=r)
        # under/overflow only cost a pass when something actually fell outside the range
        if bmin_np.min() < -r:
            self.under += int((xs < -r).sum())
        if bmax_np.max() > r:
            self.over += int((xs > r).sum())
        # moments (float64 from here on)
        self.mean, self.m2, self.m3, self.m4 = chan_merge(
            float(self.n), (self.mean, self.m2, self.m3, self.m4), float(n), (bmean_np, bm2_np, bm3_np, bm4_np))
        self.n += n
        self.min = np.minimum(self.min, bmin_np)
        self.max = np.maximum(self.max, bmax_np)
        self.hist += np.rint(hist.double().cpu().numpy()).astype(np.int64)
        if fired is not None:
            self.fired += fired.cpu().numpy().astype(np.int64)
        # outliers against the pooled std including this batch; only columns whose extreme crosses the
        # threshold are gathered (index_select over contiguous rows is cheap; full passes are not)
        thr = self.outlier_k * self.site_std()
        cols = np.nonzero(np.maximum(bmax_np, -bmin_np) > thr)[0]
        if cols.size:
            sub = x.index_select(1, torch.from_numpy(cols).to(x.device))
            self.outliers[cols] += (sub.abs() > thr).sum(0).cpu().numpy().astype(np.int64)
        # examples: each batch offers its arg-max and arg-min token per dim; the E largest |x| of all
        # offers are kept (ties keep the earlier token). Only dims whose offer would enter the kept set
        # are looked up (few after the first batches), by matching the column extreme in a gathered
        # sub-matrix (arg-reductions over dim 0 are a slow path in torch on CPU).
        for vals in (bmax_np, bmin_np):
            a = np.abs(vals)
            cols = np.nonzero(a > self.top_val[:, -1])[0]
            if not cols.size:
                continue
            sel = torch.from_numpy(cols).to(x.device)
            target = torch.from_numpy(vals[cols]).to(device=x.device, dtype=x.dtype)
            hit = (x.index_select(1, sel) == target).nonzero().cpu().numpy()  # (row, k) in row order
            ks, first = np.unique(hit[:, 1], return_index=True)
            idx = np.zeros(cols.size, dtype=np.int64)
            idx[ks] = hit[first, 0]
            val = np.concatenate([self.top_val[cols], a[cols, None]], axis=1)
            pos = np.concatenate([self.top_pos[cols], rows[idx][:, None, :]], axis=1)
            order = np.argsort(-val, axis=1, kind="stable")[:, : self.examples]
            self.top_val[cols] = np.take_along_axis(val, order, axis=1)
            self.top_pos[cols] = np.take_along_axis(pos, order[:, :, None], axis=1)

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
