"""The KV cache, kept apart from the model (as nanochat's engine does): one slot per plan occurrence.

A repeated block must not share its keys, so slot ``i`` belongs to plan position ``i``. Tensors are
preallocated and written in place (no ``torch.cat`` per step) and grow by doubling when needed.
"""

from __future__ import annotations

import torch

from lminspect.errors import UserError
from lminspect.models.layercall import LayerCall


class KVCache:
    """Keys/values for one sequence batch: one slot per plan occurrence.

    ``k[i]`` / ``v[i]`` are preallocated ``[B, n_kv_head, capacity, head_dim]`` tensors for plan
    position ``i``; ``pos`` is how many tokens are already cached. Capacity doubles when needed
    (bounded by the model's context length) so a casual ``new_cache()`` stays small.
    """

    def __init__(self, plan: list[LayerCall], shapes: list[tuple[int, int]], batch_size: int,
                 capacity: int, limit: int, dtype: torch.dtype, device: torch.device | str) -> None:
        self.plan = list(plan)
        self.pos = 0
        self.limit = limit
        self.batch_size = batch_size
        self._shapes = shapes
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        cap = max(1, min(capacity, limit))
        if device is not None and torch.device(device).type == "cpu":
            from lminspect.limits import check_memory

            per_token = sum(2 * kv * hd for kv, hd in shapes) * batch_size * torch.finfo(dtype).bits // 8
            check_memory(f"a KV cache of {batch_size} x {cap:,} tokens over {len(shapes)} layer calls", per_token * cap)
        for n_kv, hd in shapes:
            self.k.append(torch.zeros(batch_size, n_kv, cap, hd, dtype=dtype, device=device))
            self.v.append(torch.zeros(batch_size, n_kv, cap, hd, dtype=dtype, device=device))

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2] if self.k else 0

    def reserve(self, n_tokens: int) -> None:
        """Make room for ``n_tokens`` positions in total (copying once if we must grow)."""
        if n_tokens > self.limit:
            raise UserError(f"sequence of {n_tokens} tokens exceeds the model's context of {self.limit} tokens")
        if n_tokens <= self.capacity:
            return
        cap = min(self.limit, max(n_tokens, 2 * self.capacity))
        for i in range(len(self.k)):
            for store in (self.k, self.v):
                old = store[i]
                new = old.new_zeros(old.shape[0], old.shape[1], cap, old.shape[3])
                new[:, :, : self.pos] = old[:, :, : self.pos]
                store[i] = new

    def reset(self) -> None:
        self.pos = 0

    def expand(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """A new cache with ``batch_size`` rows, each a copy of this batch-1 cache's prefix
        (score many continuations of one shared context in one batched forward)."""
        if self.batch_size != 1:
            raise ValueError("expand() needs a batch-1 cache")
        return self.select(torch.zeros(batch_size, dtype=torch.long), max_len)

    def select(self, rows: torch.Tensor, max_len: int | None = None) -> KVCache:
        """A new cache whose row j copies row ``rows[j]`` of this one (its first ``pos`` tokens):
        several continuations of several cached contexts in one batched forward."""
        cap = max(self.pos, max_len or self.capacity)
        out = KVCache(self.plan, self._shapes, len(rows), cap, self.limit,
                      self.k[0].dtype if self.k else torch.float32,
                      self.k[0].device if self.k else "cpu")
        for i in range(len(self.k)):
            out.k[i][:, :, : self.pos] = self.k[i][rows, :, : self.pos]
            out.v[i][:, :, : self.pos] = self.v[i][rows, :, : self.pos]
        out.pos = self.pos
        return out

    def crop(self, n: int) -> None:
        """Forget everything after the first ``n`` tokens (e.g. to re-run a shared prompt)."""
        self.pos = min(self.pos, n)
