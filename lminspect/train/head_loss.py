"""The training loss of a language-model head in one pass: logits, cross-entropy, accuracy and the
logits' gradient together.

``F.cross_entropy(h @ W.T, y)`` walks the ``[N, vocab]`` logits (412 MB at batch 8 x 256 tokens x
50304) about ten times: the log-softmax writes a copy, the accuracy's argmax reads it, the backward
zero-fills a buffer for the NLL gradient and then reads two of them. :class:`HeadLoss` multiplies
once, then, a few rows at a time while they sit in cache, takes the max, log-sum-exp, target logit
and accuracy and turns the rows *in place* into ``exp(logit - max)``; the backward is two matrix
products with the softmax's row scale and the one-hot part applied to their small sides. The
result equals ``F.cross_entropy`` to float rounding (tests check the loss and the gradients).
"""

from __future__ import annotations

from typing import Any

import torch

# rows handled per in-cache chunk: about 8 MiB of logits (within a shared L3; measured faster than
# L2-sized chunks, whose per-op overhead dominates)
_CHUNK_BYTES = 1 << 23


# The [N, vocab] buffer between a backward and the next forward, by (shape, dtype, device). A fresh
# 412 MB tensor every step costs its page faults (a fifth of the head's matmul on a CPU); reusing
# it costs nothing. A buffer is only here while no graph holds it.
_spare: dict[tuple, torch.Tensor] = {}


def _key(t: torch.Tensor) -> tuple:
    return tuple(t.shape), t.dtype, t.device


def _take_buffer(shape: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    buf = _spare.pop((shape, like.dtype, like.device), None)
    return buf if buf is not None else torch.empty(shape, dtype=like.dtype, device=like.device)


def release_buffers() -> None:
    """Drop the kept logits buffer (the training loop calls this when the run ends)."""
    _spare.clear()


class HeadLoss(torch.autograd.Function):
    """``(mean cross-entropy, correct argmax count)`` of ``h [N, D] @ w[V, D].T`` against ``y [N]``."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, v = h.shape[0], w.shape[0]
        logits = _take_buffer((n, v), h)  # [N, V]; becomes exp(logits - max) below
        torch.mm(h, w.t(), out=logits)
        rows = max(1, _CHUNK_BYTES // (v * logits.element_size()))
        loss = torch.zeros((), dtype=torch.float64, device=h.device)
        correct = torch.zeros((), dtype=torch.long, device=h.device)
        inv_total = torch.empty((n, 1), dtype=logits.dtype, device=h.device)  # 1 / sum(exp): the softmax's scale
        for r0 in range(0, n, rows):
            blk, yc = logits[r0:r0 + rows], y[r0:r0 + rows, None]
            top = blk.amax(1, keepdim=True)
            target = blk.gather(1, yc)
            if blk.is_cuda:  # (a data-dependent branch would wait for the GPU)
                correct += (blk.argmax(1, keepdim=True) == yc).sum()
            else:  # argmax costs six max passes on a CPU: run it only on rows whose target holds the max
                hit = (target >= top).squeeze(1).nonzero().squeeze(1)  # (an earlier tie would still win)
                if hit.numel():
                    correct += (blk[hit].argmax(1) == yc[hit, 0]).sum()
            blk.sub_(top).exp_()
            total = blk.sum(1, keepdim=True)
            loss += (total.log() + top - target).sum(dtype=torch.float64)
            torch.reciprocal(total, out=inv_total[r0:r0 + rows])
        ctx.save_for_backward(h, w, logits, y, inv_total)
        ctx.mark_non_differentiable(correct)
        return (loss / n).to(h.dtype), correct

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, _grad_correct: Any) -> tuple[Any, ...]:
        # d loss / d logits = (softmax - onehot) / N, with softmax = E * inv_total row by row: the row
        # scale and the one-hot part are applied to the small [N, D] sides, never to E itself
        h, w, e, y, inv_total = ctx.saved_tensors
        scale = grad_loss / e.shape[0]
        grad_h = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_h = ((e @ w) * inv_total - w[y]) * scale
        if ctx.needs_input_grad[1]:
            hs = h * scale
            grad_w = e.t() @ (hs * inv_total)
            grad_w.index_add_(0, y, hs, alpha=-1)
        _spare[_key(e)] = e  # free again: the next step writes its logits here
        return grad_h, grad_w, None


def head_loss(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy and correct-argmax count of the head ``w`` on hidden states ``h [..., D]``
    against targets ``y [...]`` (the same shape without D)."""
    return HeadLoss.apply(h.reshape(-1, h.shape[-1]), w, y.reshape(-1))


def plain_head(model: Any) -> torch.Tensor | None:
    """The head weight ``[V, D]`` when ``model``'s forward is exactly embeddings -> blocks -> final
    norm -> a bias-free linear head (lminspect's LM without overrides or hooks), so the training step
    may run :func:`hidden_states` + :func:`head_loss` instead; None otherwise."""
    from lminspect.models.common import LM

    if not isinstance(model, LM) or model._hooks is not None or "_tied_head" in model.__dict__:
        return None
    cls = type(model)
    if any(getattr(cls, name) is not getattr(LM, name) for name in ("forward", "_run_plan", "logits", "_logits")):
        return None
    head = getattr(model, "head", None)
    if head is not None and (type(head) is not torch.nn.Linear or head.bias is not None):
        return None
    return model.unembed_weight()


def hidden_states(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """The final-normed hidden states ``[B, T, D]`` of a model :func:`plain_head` accepts: its forward
    without the head."""
    from lminspect.models import full_plan

    x, ctx = model.prepare(ids)
    for pos, call in enumerate(full_plan(model.n_layers)):
        x = model.layers[call.index](x, ctx, pos, call)
    return model.norm(x)
