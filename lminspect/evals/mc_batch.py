"""Batched multiple-choice scoring: many items per forward, each context once, plans sharing work.

How one batch of items is scored (the same code serves one plan and a sweep of many):

* Each item becomes a token tree (``TokenTree``): its context once, then every ending's tokens
  (minus the last, whose prediction is never needed), a token that several endings share after the
  same path stored once. The tree is one sequence; each token attends to its ancestors only
  (``LM.prepare_tree``) and sits at its depth, so every ending scores exactly as in its own
  ``context + ending`` forward, with no key/value copies and no second pass for the endings.
* Trees of similar size are batched (``plan_batches``): on a CPU only nearly equal ones (one
  thread multiplies one item's ~150 tokens about as fast per token as thousands, so padding would
  only cost), on an accelerator many (a GPU needs thousands of tokens per matmul to be busy).
* Plans are a prefix tree of their call sequences (``PlanTree``): a call shared by several
  plans' prefixes runs once per batch and the hidden states branch from there, so a sweep of
  presets that all start ``0, 1, 2, ...`` pays for those calls once.
* Only tree nodes whose next token is scored go through the head (each once, even when several
  endings continue from it, as all endings do from the context's last token), in chunks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from lminspect.errors import UserError
from lminspect.models.layercall import LayerCall

if TYPE_CHECKING:  # annotations only
    from lminspect.models.common import LM

# auto batches, (padded tokens per forward, share of padding allowed): on a CPU a batch gains
# little and pays for its padding; an H200 ran 400 SmolLM2-sized items 1.5x faster at 128 items
# per batch than at 3k tokens (benchmarks/bench_mc_device.py)
AUTO_CPU = (3072, 0.03)
AUTO_ACCEL = (32768, 0.25)
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
    below: list[str] = field(default_factory=list)  # plans that run the call into this node (set by build)

    @classmethod
    def build(cls, plans: dict[str, list[LayerCall]]) -> PlanTree:
        root = cls()
        for name, plan in plans.items():
            node = root
            for call in plan:
                node = node.children.setdefault(call, cls())
            node.ends.append(name)
        root._collect()
        return root

    def _collect(self) -> list[str]:
        self.below = self.ends + [name for child in self.children.values() for name in child._collect()]
        return self.below

    def n_calls(self) -> int:
        """Layer calls one pass over the tree runs (its edges)."""
        return sum(1 + child.n_calls() for child in self.children.values())


@dataclass
class ScoreStats:
    calls_run: int = 0  # layer calls run per batch, summed over batches
    calls_named: int = 0  # layer calls the plans name, times batches (what separate evals would run)
    tokens: int = 0  # real (unpadded) tokens of the items' token trees, summed over batches
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    batches: int = 0
    plan_seconds: dict[str, float] = field(default_factory=dict)  # attributed: a shared call's time split evenly


@dataclass
class TokenTree:
    """One item's tokens as a trie in one sequence: the shared prefix, then the endings' tokens."""

    tokens: list[int]
    positions: list[int]  # depth in the tree = the token's position in its own sequence
    parents: list[int]  # index of the token before it (-1: the first token)
    heads: list[int]  # distinct nodes whose next-token distribution is scored
    scored: list[tuple[int, int, int]]  # (index into heads, target token, ending)
    n_endings: int
    n_prefix: int  # tokens every ending shares (the context, BOS first)

    def __len__(self) -> int:
        return len(self.tokens)


def token_tree(req: Request) -> TokenTree:
    """The request as a trie: ending tokens that follow the same path are one node."""
    P = len(req.prefix)
    tokens, positions, parents = list(req.prefix), list(range(P)), list(range(-1, P - 1))
    child: dict[tuple[int, int], int] = {}
    head_of: dict[int, int] = {}
    heads: list[int] = []
    scored: list[tuple[int, int, int]] = []
    for e, (s, n) in enumerate(zip(req.suffixes, req.n_cont, strict=True)):
        path = [P - 1]  # path[m]: the node whose output predicts s[m]
        for t in s[:-1]:
            node = child.get((path[-1], t))
            if node is None:
                node = child[(path[-1], t)] = len(tokens)
                tokens.append(t)
                positions.append(positions[path[-1]] + 1)
                parents.append(path[-1])
            path.append(node)
        for m in range(len(s) - n, len(s)):
            h = head_of.get(path[m])
            if h is None:
                h = head_of[path[m]] = len(heads)
                heads.append(path[m])
            scored.append((h, s[m], e))
    return TokenTree(tokens, positions, parents, heads, scored, len(req.suffixes), P)


def plan_batches(trees: Sequence[TokenTree], batch_size: int | None,
                 auto: tuple[int, float] = AUTO_CPU) -> list[list[int]]:
    """Item indices per batch, largest trees first so a batch's rows have similar lengths.

    ``batch_size``: items per batch; None or 0 = auto: fill up to ``auto = (padded tokens, share of
    padding)``, ``AUTO_CPU`` or ``AUTO_ACCEL``."""
    order = sorted(range(len(trees)), key=lambda i: (-len(trees[i]), i))
    batches: list[list[int]] = []
    cur: list[int] = []
    real = 0
    for i in order:
        if batch_size:
            full = len(cur) >= batch_size
        else:  # rows are padded to the first (largest) tree of the batch
            padded = (len(cur) + 1) * (len(trees[cur[0]]) if cur else len(trees[i]))
            full = bool(cur) and (padded > auto[0] or padded - real - len(trees[i]) > auto[1] * padded)
        if full:
            real = 0
            batches.append(cur)
            cur = []
        cur.append(i)
        real += len(trees[i])
    if cur:
        batches.append(cur)
    return batches


class _Batch:
    """A padded batch of token trees, and which outputs the head scores for which ending."""

    def __init__(self, model: LM, trees: Sequence[TokenTree]) -> None:
        dev = model.device
        B, T = len(trees), max(len(t) for t in trees)
        ids = np.zeros((B, T), dtype=np.int64)
        pos = np.zeros((B, T), dtype=np.int64)
        allowed = np.zeros((B, T, T), dtype=bool)
        allowed[:, np.arange(T), np.arange(T)] = True  # padding sees itself: no all-masked softmax row
        heads, pairs = [], []  # pairs: (row in heads, target, ending row)
        n_end, q0 = 0, T
        for b, t in enumerate(trees):
            L = len(t)
            ids[b, :L], ids[b, L:] = t.tokens, t.tokens[0]
            pos[b, :L] = t.positions
            m, P = allowed[b], t.n_prefix
            m[:P, :P] = np.tri(P, dtype=bool)  # the context: causal
            q0 = min(q0, P - 1)  # the context's last token is the first one scored
            for i in range(P, L):  # an ending token sees what its parent sees, and itself
                m[i] = m[t.parents[i]]
                m[i, i] = True
            pairs += [(len(heads) + h, tgt, n_end + e) for h, tgt, e in t.scored]
            heads += [b * T + node for node in t.heads]
            n_end += t.n_endings
        pairs.sort(key=lambda p: p[0])  # by head row, so each head chunk gathers one slice
        as_t = torch.as_tensor
        self.x, self.run = model.prepare_tree(as_t(ids, device=dev), as_t(pos, device=dev),
                                              as_t(allowed, device=dev), causal_head=q0)
        self.heads = torch.tensor(heads, device=dev)
        # a plan's last call needs outputs only from q0 on: the same heads in the narrower rows. Tokens
        # before q0 (context only) also attend apart (causal_head), so a full call computes the rows
        # from q0 on exactly as a last call does: shared and separate sweeps score bit for bit alike.
        self.q0 = q0
        self.heads_last = torch.tensor([(i // T) * (T - q0) + i % T - q0 for i in heads], device=dev)
        self.pair_head = torch.tensor([p[0] for p in pairs], device=dev)
        self.pair_target = torch.tensor([p[1] for p in pairs], device=dev)
        self.pair_ending = torch.tensor([p[2] for p in pairs], device=dev)
        self.chunks = np.searchsorted([p[0] for p in pairs], np.arange(0, len(heads) + HEAD_CHUNK, HEAD_CHUNK)
                                      ).tolist()
        self.n_endings = [t.n_endings for t in trees]
        self.tokens = sum(len(t) for t in trees)

    def layer(self, model: LM, call: LayerCall, x: torch.Tensor, last: bool = False) -> torch.Tensor:
        """One layer call; ``last``: only the outputs ``lls`` reads (rows from ``q0`` on)."""
        return model.layers[call.index](x, self.run, 0, call, self.q0 if last else 0)

    def lls(self, model: LM, x: torch.Tensor) -> list[list[float]]:
        """Per item, per ending: the summed log-likelihood of its continuation (``x``: a full or
        a ``last`` layer output)."""
        heads = self.heads if x.shape[1] == self.run.length else self.heads_last
        h = x.reshape(-1, x.shape[-1])[heads]  # [heads, D]
        tok_lp = torch.empty(len(self.pair_head), dtype=torch.float32, device=h.device)
        for k, a in enumerate(range(0, len(h), HEAD_CHUNK)):
            logits = model.logits(h[a:a + HEAD_CHUNK]).float()
            lo, hi = self.chunks[k], self.chunks[k + 1]
            rows = self.pair_head[lo:hi] - a
            tok_lp[lo:hi] = torch.log_softmax(logits, -1)[rows, self.pair_target[lo:hi]]  # (faster than logsumexp)
        sums = torch.zeros(sum(self.n_endings), dtype=torch.float64, device=h.device)
        sums.index_add_(0, self.pair_ending, tok_lp.double())
        flat = sums.tolist()
        out, k = [], 0
        for n in self.n_endings:
            out.append(flat[k:k + n])
            k += n
        return out


def check_batch_memory(model: LM, lengths: Sequence[int]) -> None:
    """Refuse a batch whose working set would not fit (the weights are the model's load check):
    a layer's activations (MLP hidden states, q/k/v, residuals) for every padded token, the
    tree mask and one layer's attention scores per head, and the head's ``[chunk, vocab]`` logits."""
    from lminspect import limits

    cfg = model.config
    B, T = len(lengths), max(lengths)
    dim = int(getattr(cfg, "dim", 0))
    ffn = int(getattr(cfg, "ffn_dim", 0) or 4 * dim)
    n_head = int(getattr(cfg, "n_head", 1))
    need = 4 * B * T * (3 * ffn + 8 * dim) + B * T * T * (1 + 4 * n_head) + 8 * HEAD_CHUNK * int(model.vocab_size)
    limits.check_memory(f"a batch of {B} items x {T} tokens (activations, attention scores, logits; "
                        "hint: --batch-size 1)", need)


def _share(secs: dict[str, float], names: list[str], t0: float) -> None:
    """Split the time since ``t0`` evenly between the plans ``names``."""
    dt = (time.perf_counter() - t0) / len(names)
    for name in names:
        secs[name] = secs.get(name, 0.0) + dt


def _call(model: LM, batch: _Batch, call: LayerCall, child: PlanTree, x: torch.Tensor,
          secs: dict[str, float]) -> torch.Tensor:
    t0 = time.perf_counter()
    y = batch.layer(model, call, x, last=not child.children)
    _share(secs, child.below, t0)
    return y


def _walk(model: LM, batch: _Batch, node: PlanTree, x: torch.Tensor,
          emit: Callable[[str, list[list[float]]], None], secs: dict[str, float]) -> int:
    """Depth-first over the plan tree; returns the layer calls run. A chain without branches
    runs in a loop, so only branch points keep their hidden states alive."""
    n = 0
    while True:
        if node.ends:
            t0 = time.perf_counter()
            lls = batch.lls(model, x)
            _share(secs, node.ends, t0)
            for name in node.ends:
                emit(name, lls)
        if len(node.children) != 1:
            break
        ((call, child),) = node.children.items()
        x, node = _call(model, batch, call, child, x, secs), child
        n += 1
    for call, child in node.children.items():
        n += 1 + _walk(model, batch, child, _call(model, batch, call, child, x, secs), emit, secs)
    return n


def score_requests(model: LM, reqs: Sequence[Request], plans: dict[str, list[LayerCall]], *,
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
    trees = [token_tree(r) for r in reqs]
    with torch.inference_mode():
        auto = AUTO_CPU if torch.device(model.device).type == "cpu" else AUTO_ACCEL
        for idx in plan_batches(trees, batch_size, auto):
            check_batch_memory(model, [len(trees[i]) for i in idx])
            batch = _Batch(model, [trees[i] for i in idx])

            def emit(name: str, lls: list[list[float]], idx: list[int] = idx) -> None:
                for i, row in zip(idx, lls, strict=True):
                    out[name][i] = row

            stats.calls_run += _walk(model, batch, tree, batch.x, emit, stats.plan_seconds)
            stats.calls_named += named
            stats.tokens += batch.tokens
            stats.batches += 1
            done += len(idx)
            if progress is not None:
                progress(done, len(reqs))
    stats.seconds, stats.cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    return out, stats
