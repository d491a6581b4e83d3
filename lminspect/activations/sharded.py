"""``lminspect activations`` under torchrun: batches shared out, statistics merged on rank 0.

Every process reads the same document stream and cuts the same batches as one process would;
global batch ``b`` is run on rank ``b % world`` (sharding whole batches, not documents, keeps
each batch exactly what one process runs, so the histogram sample, the example offers and
under/overflow counts are the same token for token).

Two things a batch's statistics depend on come from the batches before it: the histogram range
(fixed by the run's first batch) and the outlier threshold (``K`` x the pooled std of every
batch so far). The ranks run a step of ``world`` consecutive batches at a time, and at each site
every rank sends the others its batch's count, mean, M2 and |x| max (``Yardstick``); each rank
folds them into the same running summary in batch order, exactly as one process folds its
batches, so every rank uses the single process's range and threshold (bit for bit) and the
outlier counts add up to the single process's. At every snapshot and at the end the other ranks send
their accumulator states to rank 0, which folds them in (``SiteAccumulator.merge``: Chan-Pebay
for the moments) and writes the results directory; the senders start again from empty, so
nothing is counted twice. Only rank 0 touches ``--out``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lminspect.activations.accumulate import SiteAccumulator, chan_merge, pooled_std
from lminspect.distributed import gather_objects, gather_to_main


def merge_to_main(accs: dict[str, SiteAccumulator], rank: int, world: int) -> None:
    """Move every rank's statistics into rank 0's ``accs``; the other ranks' are emptied."""
    if world <= 1:
        return
    parts = gather_to_main({site: acc.state() for site, acc in accs.items() if acc.n}, world)
    if rank != 0:
        accs.clear()
        return
    for part in (parts or [])[1:]:
        for site, state in part.items():
            other = SiteAccumulator.from_state(state)
            if site in accs:
                accs[site].merge(other)
            else:
                accs[site] = other


def hist_ranges(accs: dict[str, SiteAccumulator]) -> dict[str, float]:
    """Each site's fixed histogram range (what another rank's new accumulators must use)."""
    return {site: acc.hist_range for site, acc in accs.items() if acc.hist_range > 0}


class Yardstick:
    """One site's running count / mean / M2 over every rank's batches, in global batch order.

    Called by the site's accumulator with its batch's ``(n, mean, M2, |x| max)``; all ranks meet in
    one ``all_gather`` per site and step (a rank without a batch this step sends None through
    ``Yardsticks.idle``). Returns ``(first |x| max, pooled std up to and including this rank's
    batch)``; the first |x| max is that of the run's first batch (None in a resumed run, whose
    histogram ranges are already fixed)."""

    def __init__(self, site: str, rank: int, world: int, n: int = 0, mean: np.ndarray | None = None,
                 m2: np.ndarray | None = None) -> None:
        self.site, self.rank, self.world = site, rank, world
        self.n, self.mean, self.m2 = n, mean, m2
        self.first: float | None = None  # |x| max of the run's first batch (what fixes the histogram range)

    def fold(self, parts: list[Any]) -> tuple[float | None, float]:
        """Fold this step's batches (by rank; None = no batch) in order; what this rank's batch needs."""
        mine = 0.0
        for r, part in enumerate(parts):
            if part is None:
                continue
            _, n, mean, m2, absmax = part
            if self.n == 0:
                self.first = absmax
                self.mean, self.m2 = mean, m2  # what chan_merge returns for an empty left side
            else:
                z = np.zeros_like(mean)
                self.mean, self.m2, _, _ = chan_merge(float(self.n), (self.mean, self.m2, z, z), float(n),
                                                      (mean, m2, z, z))
            self.n += n
            if r == self.rank:
                mine = pooled_std(self.n, self.mean, self.m2)
        return self.first, mine

    def __call__(self, n: int, mean: np.ndarray, m2: np.ndarray, absmax: float) -> tuple[float | None, float]:
        return self.fold(gather_objects((self.site, n, mean, m2, absmax), self.world))


class Yardsticks:
    """The ``Yardstick`` of every site of one run (started from a resumed run's merged summary)."""

    def __init__(self, sites: list[str], rank: int, world: int, start: dict[str, tuple[int, Any, Any]]) -> None:
        self.sites = sites
        self.by_site = {s: Yardstick(s, rank, world, *start.get(s, (0, None, None))) for s in sites}
        self.world = world

    def idle(self) -> None:
        """This rank has no batch this step: take part in every site's exchange all the same."""
        for _ in self.sites:
            parts = gather_objects(None, self.world)
            site = next(p[0] for p in parts if p is not None)
            self.by_site[site].fold(parts)


def summaries(accs: dict[str, SiteAccumulator]) -> dict[str, tuple[int, Any, Any]]:
    """Each site's (count, mean, M2): where the ranks' yardsticks start when a run resumes."""
    return {site: (acc.n, acc.mean, acc.m2) for site, acc in accs.items() if acc.n}
