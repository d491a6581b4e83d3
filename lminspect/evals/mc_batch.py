"""Batched multiple-choice scoring: many items per forward, each context once, plans sharing work.

How one batch of items is scored (the same code serves one plan and a sweep of many):

* Contexts are left-padded into one ``[B, P]`` batch; endings (minus their last token, whose
  prediction is never needed) are right-padded into one ``[R, S]`` batch, R = all endings of
  the B items. ``LM.prepare(pad=...)`` gives each row its own positions and hides padding, so
  a padded row scores exactly as it would alone.
* The model runs layer call by layer call: the contexts through a block (their keys/values
  land in a one-slot ``KVCache``), then ``KVCache.select`` copies each item's context keys to
  its endings' rows and the endings run through the same block on top of them.
* Plans are a prefix tree of their call sequences (``PlanTree``): a call shared by several
  plans' prefixes runs once per batch and the hidden states branch from there, so a sweep of
  presets that all start ``0, 1, 2, ...`` pays for those calls once.
* Only the positions that predict continuation tokens go through the head, in chunks.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lminspect.errors import UserError
from lminspect.models.common import KVCache
from lminspect.models.layercall import LayerCall

TOKEN_BUDGET = 3072  # auto batch: padded tokens per forward (contexts + endings); CPU speed flattens past it
HEAD_CHUNK = 512  # positions per head matmul: bounds the [chunk, vocab] logits buffer


@dataclass
class Request:
    """One item's token work: a prefix every ending shares, then each ending's own tokens."""

    prefix: list[int]  # >= 1 token (BOS first when the tokenizer has one)
    suffixes: list[list[int]]  # per ending: tokens after the prefix (>= 1)
    n_cont: list[int]  # per ending: its last n_cont suffix tokens are the scored continuation

    @property
    def width(self) -> int:
        return max(len(s) for s in self.suffixes) - 1


def make_request(pairs: Sequence[tuple[list[int], list[int]]], where: str = "") -> Request:
    """From per-ending (context tokens, continuation tokens): the longest shared prefix.

    Contexts may differ in their last tokens (BPE merges across the boundary); those tokens then
    belong to the suffix, as in one full ``ctx + ending`` forward."""
    whole = [c + k for c, k in pairs]
    first = whole[0]
    n = min(len(c) for c, _ in pairs)
    P = 0
    while P < n and all(w[P] == first[P] for w in whole):
        P += 1
    if P == 0:
        raise UserError(f"{where}: the endings share no first token; give the model a BOS token")
    return Request(first[:P], [w[P:] for w in whole], [len(k) for _, k in pairs])


@dataclass
class PlanTree:
    """The plans' call sequences as a prefix tree: one node per distinct prefix."""

    children: dict[LayerCall, PlanTree] = field(default_factory=dict)
    ends: list[str] = field(default_factory=list)  # plans whose sequence ends at this node

    @classmethod
    def build(cls, plans: dict[str, list[LayerCall]]) -> PlanTree:
        root = cls()
        for name, plan in plans.items():
            node = root
            for call in plan:
                node = node.children.setdefault(call, cls())
            node.ends.append(name)
        return root

    def n_calls(self) -> int:
        """Layer calls one pass over the tree runs (its edges)."""
        return sum(1 + child.n_calls() for child in self.children.values())


@dataclass
class ScoreStats:
    calls_run: int = 0  # layer calls run per batch, summed over batches
    calls_named: int = 0  # layer calls the plans name, times batches (what separate evals would run)
    tokens: int = 0  # real (unpadded) tokens per pass through the tree
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    batches: int = 0


def plan_batches(reqs: Sequence[Request], batch_size: int | None) -> list[list[int]]:
    """Item indices per batch, longest contexts first so a batch's rows have similar lengths.

    ``batch_size``: items per batch; None or 0 = auto (fill up to ``TOKEN_BUDGET`` padded tokens)."""
    order = sorted(range(len(reqs)), key=lambda i: (-len(reqs[i].prefix), -reqs[i].width, i))
    batches: list[list[int]] = []
    cur: list[int] = []
    P = S = R = 0
    for i in order:
        r = reqs[i]
        nP, nS, nR = max(P, len(r.prefix)), max(S, r.width), R + len(r.suffixes)
        full = (len(cur) >= batch_size) if batch_size else ((len(cur) + 1) * nP + nR * nS > TOKEN_BUDGET)
        if cur and full:
            batches.append(cur)
            cur, nP, nS, nR = [], len(r.prefix), r.width, len(r.suffixes)
        cur.append(i)
        P, S, R = nP, nS, nR
    if cur:
        batches.append(cur)
    return batches


class _Batch:
    """Padded tensors for a batch of requests, and where each ending's scored logits come from."""

    def __init__(self, model: Any, reqs: Sequence[Request]) -> None:
        dev = model.device
        self.reqs = reqs
        P = max(len(r.prefix) for r in reqs)
        S = max(r.width for r in reqs)
        self.P, self.S = P, S
        owner = [b for b, r in enumerate(reqs) for _ in r.suffixes]
        ctx_pad = [P - len(r.prefix) for r in reqs]
        ctx = [[r.prefix[0]] * (P - len(r.prefix)) + r.prefix for r in reqs]
        ends = [s[:-1] + [s[0]] * (S - len(s) + 1) for r in reqs for s in r.suffixes]
        self.owner = torch.tensor(owner, device=dev)
        pad = torch.tensor(ctx_pad, device=dev) if any(ctx_pad) else None
        self.x_ctx, self.run_ctx = model.prepare(torch.tensor(ctx, device=dev), pad=pad)
        self.x_end = self.run_end = None
        if S > 0:
            end_pad = pad[self.owner] if pad is not None else None
            self.x_end, self.run_end = model.prepare(torch.tensor(ends, device=dev), start=P, pad=end_pad)
        # scored positions: row r of [ctx_last[owner] | endings] (length S + 1), column j predicts suffix[j]
        rows, cols, targets = [], [], []
        k = 0
        for q in reqs:
            for s, n in zip(q.suffixes, q.n_cont, strict=True):
                for j in range(len(s) - n, len(s)):
                    rows.append(k)
                    cols.append(j)
                    targets.append(s[j])
                k += 1
        self.rows = torch.tensor(rows, device=dev)
        self.cols = torch.tensor(cols, device=dev)
        self.targets = torch.tensor(targets, device=dev)
        self.n_rows = k
        self.tokens = sum(len(r.prefix) + sum(len(s) - 1 for s in r.suffixes) for r in reqs)

    def layer(self, model: Any, call: LayerCall, x_ctx: torch.Tensor, x_end: torch.Tensor | None):
        """One layer call: the contexts, then the endings on top of the contexts' keys/values."""
        block = model.layers[call.index]
        attn = block.attn
        kv = KVCache([call], [(attn.n_kv_head, attn.head_dim)], x_ctx.shape[0], self.P, model.context_length,
                     x_ctx.dtype, x_ctx.device)
        y_ctx = block(x_ctx, dataclasses.replace(self.run_ctx, cache=kv), 0, call)
        kv.pos = self.P
        y_end = None
        if x_end is not None:
            y_end = block(x_end, dataclasses.replace(self.run_end, cache=kv.select(self.owner, self.P + self.S)),
                          0, call)
        return y_ctx, y_end

    def lls(self, model: Any, x_ctx: torch.Tensor, x_end: torch.Tensor | None) -> list[list[float]]:
        """Per item, per ending: the summed log-likelihood of its continuation."""
        h = x_ctx[:, -1:][self.owner]  # [R, 1, D]: the last context position predicts suffix[0]
        if x_end is not None:
            h = torch.cat([h, x_end], 1)  # [R, S + 1, D]
        h = h[self.rows, self.cols]  # [N, D]
        tok_lp = torch.empty(len(self.rows), dtype=torch.float32, device=h.device)
        for a in range(0, len(self.rows), HEAD_CHUNK):
            lp = torch.log_softmax(model.logits(h[a:a + HEAD_CHUNK]).float(), -1)
            tok_lp[a:a + HEAD_CHUNK] = lp.gather(1, self.targets[a:a + HEAD_CHUNK, None])[:, 0]
        sums = torch.zeros(self.n_rows, dtype=torch.float64, device=h.device)
        sums.index_add_(0, self.rows, tok_lp.double())
        flat = sums.tolist()
        out, k = [], 0
        for q in self.reqs:
            out.append(flat[k:k + len(q.suffixes)])
            k += len(q.suffixes)
        return out


def _walk(model: Any, batch: _Batch, node: PlanTree, x_ctx: torch.Tensor, x_end: torch.Tensor | None,
          emit: Callable[[str, list[list[float]]], None]) -> int:
    """Depth-first over the plan tree; returns the layer calls run. A chain without branches
    runs in a loop, so only branch points keep their hidden states alive."""
    n = 0
    while True:
        if node.ends:
            lls = batch.lls(model, x_ctx, x_end)
            for name in node.ends:
                emit(name, lls)
        if len(node.children) != 1:
            break
        ((call, node),) = node.children.items()
        x_ctx, x_end = batch.layer(model, call, x_ctx, x_end)
        n += 1
    for call, child in node.children.items():
        y_ctx, y_end = batch.layer(model, call, x_ctx, x_end)
        n += 1 + _walk(model, batch, child, y_ctx, y_end, emit)
    return n


def score_requests(model: Any, reqs: Sequence[Request], plans: dict[str, list[LayerCall]], *,
                   batch_size: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, list[list[float]]], ScoreStats]:
    """Per plan, per item, per ending log-likelihoods, every plan scored in one pass per batch."""
    if getattr(model, "_hooks", None) is not None:
        raise UserError("batched scoring runs without hooks; score outside a model.hooks(...) block")
    tree = PlanTree.build(plans)
    named = sum(len(p) for p in plans.values())
    out: dict[str, list[list[float]]] = {name: [[] for _ in reqs] for name in plans}
    stats = ScoreStats()
    t0, c0 = time.perf_counter(), time.process_time()
    done = 0
    with torch.inference_mode():
        for idx in plan_batches(reqs, batch_size):
            batch = _Batch(model, [reqs[i] for i in idx])

            def emit(name: str, lls: list[list[float]], idx: list[int] = idx) -> None:
                for i, row in zip(idx, lls, strict=True):
                    out[name][i] = row

            stats.calls_run += _walk(model, batch, tree, batch.x_ctx, batch.x_end, emit)
            stats.calls_named += named
            stats.tokens += batch.tokens
            stats.batches += 1
            done += len(idx)
            if progress is not None:
                progress(done, len(reqs))
    stats.seconds, stats.cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    return out, stats
