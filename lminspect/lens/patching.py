"""Activation patching: copy one site's activation from a clean run into a corrupted run.

For every plan position ``p`` and token position ``t`` (or head ``h``) the corrupted prompt is
re-run with that one activation taken from the clean prompt, and a metric on the last
position's logits (``logit_diff: Paris,Rome``) says how much of the clean behaviour came back:
``recovered = (patched - corrupt) / (clean - corrupt)`` (1 = all of it, 0 = none).

Sites: ``resid`` (the block input ``resid_in.p`` at token ``t``), ``attn`` / ``mlp`` (the branch
outputs ``attn_out.p`` / ``mlp_out.p`` at ``t``) and ``head`` (head ``h``'s output at every token,
via its slice of ``attn_z.p``: the grid is plan positions x heads).

Why it is fast (docs/lens.md has the numbers):

* the clean prompt runs once, with every activation the sweep needs cached;
* tokens before the first one where the prompts differ have identical activations in both
  runs (attention is causal), so patching them changes nothing: those cells are the corrupt
  value without a forward, and that shared token prefix runs once into a KV cache that every
  patched run continues from;
* the corrupted run's residual at each plan position is cached too, so a run that patches
  position ``p`` starts there (``LM.forward_from``) instead of re-running the layers before it;
* the runs of one plan position are one batch (row ``b`` patches token ``t_b`` or head ``h_b``),
  and only the last position's logits are computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lminspect.errors import UserError
from lminspect.lens.readout import Metric, plan_labels
from lminspect.models.layercall import LayerCall
from lminspect.models.sites import site_name

if TYPE_CHECKING:  # annotations only
    from lminspect.models.common import LM

PATCH_SITES = {"resid": "resid_in", "attn": "attn_out", "mlp": "mlp_out", "head": "attn_z"}


@dataclass
class PatchResult:
    """The recovered fraction per (plan position, token or head) and the raw metric values."""

    plan: str
    site: str  # resid | attn | mlp | head
    metric: str
    rows: list[str]  # plan position labels
    cols: list[str]  # token texts (resid/attn/mlp) or head numbers (head)
    recovered: np.ndarray  # [rows, cols]: (patched - corrupt) / (clean - corrupt)
    values: np.ndarray  # [rows, cols]: the metric of each patched run
    clean: float  # the metric on the clean prompt
    corrupt: float  # on the corrupted prompt
    shared_prefix: int  # tokens the two prompts share at the start (their cells are not run)
    forwards: int  # patched runs actually computed (batched rows)

    def __repr__(self) -> str:
        from lminspect.lens.render import patch_table, text_of

        return text_of(patch_table(self))

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan, "site": self.site, "metric": self.metric, "rows": self.rows, "cols": self.cols,
                "clean": self.clean, "corrupt": self.corrupt, "shared_prefix": self.shared_prefix,
                "recovered": self.recovered.tolist(), "values": self.values.tolist()}

    def best(self, n: int = 5) -> list[tuple[str, str, float]]:
        """The ``n`` cells that recover the most: (row, col, recovered)."""
        flat = np.argsort(-np.nan_to_num(self.recovered, nan=-np.inf), axis=None)[:n]
        return [(self.rows[i // self.recovered.shape[1]], self.cols[i % self.recovered.shape[1]],
                 float(self.recovered.flat[i])) for i in flat]


def _first_difference(a: Sequence[int], b: Sequence[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            return i
    return len(a)


class _Patcher:
    """The hook that replaces, in batch row ``b``, the site's value at ``index[b]`` with the clean one."""

    def __init__(self, site: str, clean: torch.Tensor, index: torch.Tensor, offset: int) -> None:
        self.site, self.clean, self.index, self.offset = site, clean, index, offset

    def __call__(self, name: str, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        rows = torch.arange(t.shape[0], device=t.device)
        if self.site == "head":  # [B, T', H, hd]: head index[b] at every token
            out[rows, :, self.index] = self.clean[0, self.offset:, :, :].permute(1, 0, 2)[self.index]
        else:  # [B, T', D]: token index[b] (absolute) at its place in the suffix
            out[rows, self.index - self.offset] = self.clean[0, self.index]
        return out


@torch.inference_mode()
def activation_patching(lm: LM, clean_ids: Sequence[int], corrupt_ids: Sequence[int], metric: Metric,
                        plan: list[LayerCall] | None = None, *, site: str = "resid", batch_size: int = 64,
                        plan_text: str = "all", col_labels: list[str] | None = None,
                        progress: Callable[[int, int], None] | None = None) -> PatchResult:
    """Patch ``site`` from the clean into the corrupted run at every plan position and token (or head);
    ``progress(done, total)`` after each batch of patched runs."""
    if site not in PATCH_SITES:
        raise UserError(f"unknown patch site {site!r} (expected one of {', '.join(PATCH_SITES)})")
    if len(clean_ids) != len(corrupt_ids):
        raise UserError(f"the clean and corrupted prompts must have the same number of tokens "
                        f"({len(clean_ids)} vs {len(corrupt_ids)}); patching lines them up token by token")
    if list(clean_ids) == list(corrupt_ids):
        raise UserError("the clean and corrupted prompts are the same tokens: there is nothing to patch")
    plan = lm._check_plan(plan)
    kind, T, P, dev = PATCH_SITES[site], len(clean_ids), len(plan), lm.device
    clean_x = torch.tensor([list(clean_ids)], dtype=torch.long, device=dev)
    corrupt_x = torch.tensor([list(corrupt_ids)], dtype=torch.long, device=dev)
    clean_logits, clean_acts = lm.run_with_cache(clean_x, [kind], plan=plan)
    m_clean = float(metric(clean_logits[:, -1])[0])

    start = d = _first_difference(clean_ids, corrupt_ids)
    cache = lm.new_cache(plan, max_len=T) if start > 0 else None
    if cache is not None:
        lm(corrupt_x[:, :start], cache=cache)
    resid: dict[str, torch.Tensor] = {}
    with lm.hooks(lambda name, t: resid.__setitem__(name, t.detach()), ["resid_in"]):
        m_corrupt = float(metric(lm(corrupt_x[:, start:], cache=cache, plan=None if cache else plan)[:, -1])[0])
    if cache is not None:
        cache.crop(start)

    n_heads = lm.layers[plan[0].index].attn.n_head
    cols = list(range(n_heads)) if site == "head" else list(range(d, T))
    values = np.full((P, n_heads if site == "head" else T), m_corrupt, dtype=np.float64)
    forwards = 0
    for p in range(P):
        for k in range(0, len(cols), batch_size):
            chunk = torch.tensor(cols[k:k + batch_size], device=dev)
            B = len(chunk)
            x = resid[site_name("resid_in", p)].expand(B, -1, -1).clone()
            bc = cache.expand(B, max_len=T) if cache is not None else None
            hook = _Patcher(site, clean_acts[site_name(kind, p)], chunk, start)
            if site == "resid":
                x = hook(kind, x)
                out = lm.forward_from(p, x, cache=bc, plan=None if bc else plan, last_only=True)
            else:
                with lm.hooks(hook, [site_name(kind, p)]):
                    out = lm.forward_from(p, x, cache=bc, plan=None if bc else plan, last_only=True)
            values[p, chunk.cpu().numpy()] = metric(out[:, -1]).cpu().numpy()
            forwards += B
            if progress is not None:
                progress(forwards, P * len(cols))
    span = m_clean - m_corrupt
    recovered = (values - m_corrupt) / span + 0.0 if span != 0 else np.full_like(values, np.nan)  # + 0.0: no -0.00
    if site == "head":
        labels = [f"h{h}" for h in range(n_heads)]
    else:
        labels = col_labels if col_labels is not None else [str(i) for i in corrupt_ids]
    return PatchResult(plan=plan_text, site=site, metric=metric.describe(), rows=plan_labels(plan), cols=labels,
                       recovered=recovered, values=values, clean=m_clean, corrupt=m_corrupt, shared_prefix=d,
                       forwards=forwards)
