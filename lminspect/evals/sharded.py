"""``evaluate_mc`` under torchrun: items sharded across the processes, scores gathered in item order.

Item ``i`` is scored on rank ``i % world`` with the ordinary single-process scorer; the per-item
log-likelihoods and token counts are gathered on every rank and the metrics (and standard
errors) are computed once from the whole list, so the result equals one process's. Time, CPU
time, tokens and layer calls are summed over the ranks. One process: plain ``evaluate_mc``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from lminspect.distributed import gather_in_order, join, shard, sum_over_ranks
from lminspect.evals.mc import MCItem, MCResult, evaluate_mc, mc_result

if TYPE_CHECKING:  # annotations only
    from lminspect.models.common import LM


def evaluate_mc_sharded(model: LM, tokenizer: Any, items: Sequence[MCItem], *, plan: Any = None,
                        mode: str = "shared", bos: int | None = None, batch_size: int | None = None,
                        progress: Callable[[int, int], None] | None = None) -> MCResult:
    """``evaluate_mc`` of ``items``, split over the torchrun processes when there are several."""
    rank, world, _ = join(str(getattr(model, "device", "cpu")))
    if world <= 1:
        return evaluate_mc(model, tokenizer, items, plan=plan, mode=mode, bos=bos, progress=progress,
                           batch_size=batch_size)
    t0 = time.perf_counter()
    mine = shard(len(items), rank, world)
    local: list[tuple[list[float], list[int]]] = []
    sums = [0.0, 0.0, 0.0]  # CPU seconds, tokens, layer calls
    if mine:  # more processes than items leaves some idle
        res = evaluate_mc(model, tokenizer, [items[i] for i in mine], plan=plan, mode=mode, bos=bos,
                          progress=progress, batch_size=batch_size)
        local = [(s.lls, s.n_tokens) for s in res.items]
        sums = [res.cpu_seconds, res.tokens, res.layer_calls]
    full = gather_in_order(mine, local, len(items), world)
    cpu, tokens, calls = sum_over_ranks(sums, world)
    return mc_result(items, [ll for ll, _ in full], [nt for _, nt in full], seconds=time.perf_counter() - t0,
                     cpu_seconds=cpu, tokens=int(tokens), layer_calls=int(calls))
