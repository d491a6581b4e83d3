"""What the instruments share: naming plan positions, turning target text into a token, metrics.

A *target* is a token the user cares about (``" Paris"``). Text that the tokenizer splits into
several tokens stands for its first token (TransformerLens does the same); the ``note`` says so,
so a surprising read-out can be traced to the split. ``id:123`` names a token id directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lminspect.errors import UserError
from lminspect.models.layercall import LayerCall


def plan_labels(plan: Sequence[LayerCall]) -> list[str]:
    """One short label per plan position: the layer index, ``#k`` for its k-th run (k >= 2),
    ``~`` when the occurrence is scaled or has heads ablated."""
    seen: dict[int, int] = {}
    out = []
    for c in plan:
        seen[c.index] = seen.get(c.index, 0) + 1
        label = str(c.index) if seen[c.index] == 1 else f"{c.index}#{seen[c.index]}"
        if (c.attn_scale, c.mlp_scale) != (1.0, 1.0) or c.has_head_scales:
            label += "~"
        out.append(label)
    return out


@dataclass(frozen=True)
class Target:
    """A token named by the user: its id, the text it decodes to and how it was resolved."""

    id: int
    text: str
    note: str = ""  # non-empty when the text split into several tokens


def resolve_token(tok: Any, spec: str | int, vocab_size: int) -> Target:
    """``" Paris"`` / ``"id:123"`` / ``123`` -> :class:`Target` (first token of a multi-token text)."""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.startswith("id:")):
        try:
            tid = int(spec[3:] if isinstance(spec, str) else spec)
        except ValueError:
            raise UserError(f"bad token {spec!r}: expected id:N with N an integer") from None
        if not 0 <= tid < vocab_size:
            raise UserError(f"token id {tid} is out of range (vocabulary of {vocab_size})")
        return Target(tid, tok.decode([tid], skip_special_tokens=False) if tok is not None else str(tid))
    if not spec:
        raise UserError("empty target token: give text such as ' Paris' or id:N")
    if tok is None:
        raise UserError(f"cannot resolve {spec!r} without a tokenizer; give id:N")
    ids = tok.encode(spec, add_special_tokens=False)
    if not ids:
        raise UserError(f"target {spec!r} encodes to no tokens")
    first = tok.decode([ids[0]], skip_special_tokens=False)
    note = ""
    if len(ids) > 1:
        note = f"{spec!r} is {len(ids)} tokens; using the first, {first!r}"
    return Target(int(ids[0]), first, note)


METRIC_KINDS = ("logit_diff", "logit", "logprob", "prob")
METRIC_HELP = ("'logit_diff: A,B' (logit of A minus logit of B), 'logit: A', 'logprob: A' or 'prob: A', "
               "read at the last token; A/B are texts such as ' Paris' or id:N")


@dataclass(frozen=True)
class Metric:
    """A scalar read from the last position's logits: what patching tries to recover."""

    kind: str
    a: Target
    b: Target | None = None

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits [B, V]`` -> ``[B]`` (float32)."""
        logits = logits.float()
        if self.kind == "logit_diff":
            return logits[:, self.a.id] - logits[:, self.b.id]
        if self.kind == "logit":
            return logits[:, self.a.id]
        logp = torch.log_softmax(logits, dim=-1)[:, self.a.id]
        return logp if self.kind == "logprob" else logp.exp()

    def describe(self) -> str:
        if self.kind == "logit_diff":
            return f"logit_diff: {self.a.text!r} - {self.b.text!r}"
        return f"{self.kind}: {self.a.text!r}"


def parse_metric(spec: str, tok: Any, vocab_size: int) -> Metric:
    """``"logit_diff: Paris,Rome"`` -> :class:`Metric`. Spaces after ':' and ',' are kept only when
    quoted; a bare word gets a leading space, since the word after a prompt usually carries one."""
    kind, sep, rest = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in METRIC_KINDS:
        raise UserError(f"bad metric {spec!r}: expected {METRIC_HELP}")
    names = [_token_text(x) for x in rest.split(",")]
    want = 2 if kind == "logit_diff" else 1
    if len(names) != want or not all(names):
        raise UserError(f"bad metric {spec!r}: {kind} takes {want} token{'s' if want > 1 else ''} ({METRIC_HELP})")
    targets = [resolve_token(tok, n, vocab_size) for n in names]
    if want == 2 and targets[0].id == targets[1].id:
        raise UserError(f"bad metric {spec!r}: both texts start with the same token {targets[0].text!r}")
    return Metric(kind, targets[0], targets[1] if want == 2 else None)


TARGET_RULE = ("A bare word means the word after a space (Paris -> ' Paris'); quote it to keep the exact "
               "text ('\"Paris\"'), or give id:N.")


def target_text(s: str) -> str:
    """The one rule for a token typed on the command line (``TARGET_RULE``): a bare word gets a
    leading space, since the word after a prompt usually carries one; quoted text is kept exactly."""
    return _token_text(s)


def _token_text(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    if s.startswith("id:") or not s:
        return s
    return " " + s


def encode_prompt(tok: Any, text: str | Sequence[int], context: int, what: str = "prompt",
                  vocab: int | None = None) -> list[int]:
    """Token ids of a prompt (text, or ids as they are), refusing empty or over-long prompts and
    ids outside the model's ``vocab``."""
    ids = tok.encode(text) if isinstance(text, str) else [int(i) for i in text]
    if not ids:
        raise UserError(f"empty {what}: give at least one token")
    if len(ids) > context:
        raise UserError(f"{what} of {len(ids)} tokens exceeds the model's context of {context}")
    from lminspect.generate import check_ids

    check_ids(ids, vocab, tok, what)
    return ids


def token_labels(tok: Any, ids: Sequence[int]) -> list[str]:
    """Each token as printable text (newlines escaped)."""
    return [tok.decode([i], skip_special_tokens=False).replace("\n", "\\n") for i in ids]
