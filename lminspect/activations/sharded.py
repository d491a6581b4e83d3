"""``lminspect activations`` under torchrun: batches shared out, statistics merged on rank 0.

Every process reads the same document stream and cuts the same batches as one process would;
global batch ``b`` is run on rank ``b % world`` (sharding whole batches, not documents, keeps
each batch exactly what one process runs, so the histogram sample, the example offers and
under/overflow counts are the same token for token). Rank 0's first batch fixes each site's
histogram range (as in one process) and the range is sent to the others before they start, so
all histograms share their bins and add. At every snapshot and at the end the other ranks send
their accumulator states to rank 0, which folds them in (``SiteAccumulator.merge``: Chan-Pebay
for the moments) and writes the results directory; the senders start again from empty, so
nothing is counted twice. Only rank 0 touches ``--out``.
"""

from __future__ import annotations

from lminspect.activations.accumulate import SiteAccumulator
from lminspect.distributed import gather_to_main


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
