"""Multiple-choice evaluation by log-likelihood, HellaSwag style.

An item is ``(ctx, endings, label)``. Each ending is scored as lm-evaluation-harness
scores a ``multiple_choice`` task:

* the request is ``(ctx, " " + ending)`` (HellaSwag's ``target_delimiter`` is a space);
* continuation tokens = ``tokens(ctx + " " + ending)[len(tokens(ctx)):]`` (the harness's
  ``_encode_pair``: trailing spaces of ``ctx`` move to the continuation first);
* the score is the summed log-probability of the continuation tokens.

Metrics (all three come from one scoring pass):

* ``acc``: argmax of the summed log-likelihood;
* ``acc_norm``: argmax of log-likelihood / ``len(ending)`` in **characters** (what the
  harness's code does, despite the docs' "byte-length normalization"; the length excludes
  the leading space);
* ``acc_bytes``: argmax of log-likelihood / UTF-8 byte length of the ending.

Speed: the harness runs one full ``ctx + ending`` forward per ending. Here the context is
run once per item into a KV cache; its keys/values are copied into a batch-of-endings cache
and all endings run together as one padded batch against the shared prefix.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lminspect.documents import file_suffix, iter_rows
from lminspect.errors import UserError

__all__ = [
    "ItemScore",
    "MCItem",
    "MCResult",
    "encode_pair",
    "evaluate_mc",
    "hellaswag_item",
    "load_mc",
    "make_encoder",
    "preprocess_hellaswag",
    "score_item",
]


@dataclass
class MCItem:
    ctx: str  # the prompt; endings are appended after a space
    endings: list[str]  # candidate continuations, without the leading space
    label: int  # index of the right ending
    id: str | None = None


@dataclass
class ItemScore:
    lls: list[float]  # summed continuation log-likelihood per ending
    n_tokens: list[int]  # continuation tokens per ending
    label: int
    pred: int  # argmax ll
    pred_norm: int  # argmax ll / characters
    pred_bytes: int  # argmax ll / UTF-8 bytes


@dataclass
class MCResult:
    n: int
    acc: float
    acc_norm: float
    acc_bytes: float
    seconds: float
    tokens: int  # tokens run through the model (context once + endings)
    items: list[ItemScore] = field(default_factory=list, repr=False)
    cpu_seconds: float = float("nan")  # process CPU time: robust to other load on a shared machine

    @property
    def items_per_s(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else float("nan")

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self, with_items: bool = False) -> dict[str, Any]:
        d = {
            "n": self.n,
            "acc": self.acc,
            "acc_norm": self.acc_norm,
            "acc_bytes": self.acc_bytes,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "tokens": self.tokens,
            "items_per_s": self.items_per_s,
            "tokens_per_s": self.tokens_per_s,
        }
        if with_items:
            d["items"] = [asdict(s) for s in self.items]
        return d


# --------------------------------------------------------------------------- HellaSwag data


def preprocess_hellaswag(text: str) -> str:
    """lm-evaluation-harness's HellaSwag cleanup (WikiHow artefacts: ``[title]``, ``[step]``...)."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    text = text.replace("  ", " ")
    return text


def hellaswag_item(row: dict[str, Any], k: int = 0) -> MCItem:
    """One row of HellaSwag (hub format, or the already-flat ``ctx/endings/label`` format).

    Hub rows: ``query = preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())``,
    endings preprocessed, label an int (the hub stores it as a string).
    """
    where = f"item {k}"
    if "endings" not in row:
        raise UserError(f"{where}: no 'endings' field (expected HellaSwag format: ctx, endings, label)")
    endings = row["endings"]
    if not isinstance(endings, list | tuple) or len(endings) < 2 or not all(isinstance(e, str) for e in endings):
        raise UserError(f"{where}: 'endings' must be a list of at least two strings")
    label = row.get("label")
    try:
        label = int(label)
    except (TypeError, ValueError):
        raise UserError(f"{where}: 'label' must be an integer index into endings, got {label!r}") from None
    if not 0 <= label < len(endings):
        raise UserError(f"{where}: label {label} out of range for {len(endings)} endings")
    if "ctx_a" in row and "activity_label" in row:
        ctx_b = str(row.get("ctx_b") or "")
        ctx = str(row["ctx_a"]) + " " + ctx_b.capitalize()
        query = preprocess_hellaswag(str(row["activity_label"]) + ": " + ctx)
        ends = [preprocess_hellaswag(e) for e in endings]
    elif "ctx" in row:
        query, ends = str(row["ctx"]), list(endings)
    else:
        raise UserError(f"{where}: no 'ctx' (or 'ctx_a' + 'activity_label') field")
    rid = row.get("ind", row.get("id"))
    return MCItem(query, ends, label, None if rid is None else str(rid))


def _rows_from_file(path: Path) -> Iterable[dict[str, Any]]:
    if file_suffix(path) not in (".jsonl", ".jsonl.gz", ".ndjson", ".json", ".parquet"):
        raise UserError(f"{path}: unsupported multiple-choice file type (use .jsonl, .json or .parquet)")
    return (row for _, row in iter_rows(path))


def _rows_from_hub(ref: str, split: str | None) -> Iterable[dict[str, Any]]:
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise UserError("the 'datasets' package is needed for hub datasets") from None
    name = ref.removeprefix("hf:")
    try:
        ds = datasets.load_dataset(name, split=split or "validation")
    except Exception as exc:  # noqa: BLE001 - offline, missing, gated...: all one line
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"cannot load dataset '{name}' (split {split or 'validation'}): {first}",
            hint="offline? give a local .jsonl/.parquet file, e.g. one made by 'lminspect data make-mc'",
        ) from None
    return ds


def load_mc(source: str | Path | Sequence[dict[str, Any]], *, limit: int | None = None,
            split: str | None = None) -> list[MCItem]:
    """Items from a local JSONL/JSON/parquet file, a HF dataset id (``Rowan/hellaswag``), or rows.

    Hub-format HellaSwag rows get the harness's preprocessing; flat ``ctx/endings/label``
    rows (``lminspect data make-mc`` output) are used as they are.
    """
    if isinstance(source, list | tuple):
        rows: Iterable[dict[str, Any]] = source
    else:
        path = Path(source)
        if path.exists():
            if path.is_dir():
                raise UserError(f"{path} is a directory; give a .jsonl/.json/.parquet file")
            rows = _rows_from_file(path)
        elif str(source).lower().endswith((".jsonl", ".json", ".parquet", ".ndjson")):
            raise UserError(f"multiple-choice file not found: {source}")
        else:
            rows = _rows_from_hub(str(source), split)
    items: list[MCItem] = []
    for k, row in enumerate(rows):
        if limit is not None and len(items) >= limit:
            break
        if not isinstance(row, dict):
            raise UserError(f"item {k}: expected an object with ctx, endings, label")
        items.append(hellaswag_item(row, k))
    if not items:
        raise UserError(f"no multiple-choice items in {source if not isinstance(source, list | tuple) else 'rows'}")
    return items


# --------------------------------------------------------------------------- scoring


def make_encoder(tok: Any) -> Callable[[str], list[int]]:
    """``text -> ids`` without special tokens, for an lminspect/HF ``tokenizers``/transformers tokenizer."""
    if callable(tok) and not hasattr(tok, "encode"):
        return tok

    def enc(text: str) -> list[int]:
        try:
            out = tok.encode(text, add_special_tokens=False)
        except TypeError:
            out = tok.encode(text)
        ids = getattr(out, "ids", out)
        return [int(i) for i in ids]

    return enc


def encode_pair(encode: Callable[[str], list[int]], context: str, continuation: str) -> tuple[list[int], list[int]]:
    """The harness's ``_encode_pair``: (context tokens, continuation tokens) from one whole encoding."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = encode(context + continuation)
    n_ctx = len(encode(context))
    return whole[:n_ctx], whole[n_ctx:]


def _argmax(xs: Sequence[float]) -> int:
    best, bi = -math.inf, 0
    for i, x in enumerate(xs):
        if x > best:
            best, bi = x, i
    return bi


def _finish(item: MCItem, lls: list[float], n_tok: list[int]) -> ItemScore:
    chars = [max(1, len(e)) for e in item.endings]
    nbytes = [max(1, len(e.encode("utf-8"))) for e in item.endings]
    return ItemScore(
        lls=lls,
        n_tokens=n_tok,
        label=item.label,
        pred=_argmax(lls),
        pred_norm=_argmax([ll / c for ll, c in zip(lls, chars, strict=True)]),
        pred_bytes=_argmax([ll / b for ll, b in zip(lls, nbytes, strict=True)]),
    )


def _requests(item: MCItem, encode: Callable[[str], list[int]], bos: int | None):
    out = []
    for e in item.endings:
        ctx, cont = encode_pair(encode, item.ctx, " " + e)
        if not cont:
            raise UserError(f"item {item.id or ''}: ending {e!r} encodes to no tokens")
        if not ctx:  # the harness puts EOT/BOS in front of an empty context
            if bos is None:
                raise UserError("an item has an empty context and the tokenizer has no BOS/EOS token")
            ctx = [bos]
        elif bos is not None:
            ctx = [bos, *ctx]
        out.append((ctx, cont))
    return out


def _score_full(model: Any, reqs, plan) -> tuple[list[float], int]:
    """The harness way: one full forward of ctx + continuation per ending."""
    import torch

    lls, tokens = [], 0
    for ctx, cont in reqs:
        ids = torch.tensor([ctx + cont], device=_device(model))
        logits = _forward(model, ids, plan=plan)[0, len(ctx) - 1 : -1].float()
        lp = torch.log_softmax(logits, -1)
        lls.append(float(lp.gather(1, torch.tensor(cont, device=lp.device)[:, None]).sum()))
        tokens += len(ctx) + len(cont)
    return lls, tokens


def _device(model: Any):
    dev = getattr(model, "device", None)
    return dev if dev is not None else "cpu"


def _forward(model: Any, ids, **kw):
    """lminspect LM (returns logits) or HF model (returns an output with ``.logits``)."""
    if kw.get("plan") is None:
        kw.pop("plan", None)
    out = model(ids, **kw) if not hasattr(model, "new_cache") else model.forward(ids, **kw)
    return getattr(out, "logits", out)


def _score_shared(model: Any, reqs, plan) -> tuple[list[float], int]:
    """Context once into a KV cache, then every ending in one padded batch against it.

    Endings whose context tokens differ (BPE merging across the boundary) fall back to a
    shared prefix = the longest common prefix of their contexts.
    """
    import torch

    whole = [ctx + cont for ctx, cont in reqs]
    n_ctx = min(len(ctx) for ctx, _ in reqs)
    P = 0
    first = whole[0]
    while P < n_ctx and all(w[P] == first[P] for w in whole):
        P += 1
    P = max(P, 1)  # need one token to condition on; P <= shortest context
    dev = _device(model)
    cache = model.new_cache(plan, batch_size=1, max_len=max(len(w) for w in whole))
    prefix = torch.tensor([first[:P]], device=dev)
    last = _forward(model, prefix, cache=cache, plan=plan, last_only=True)[0, -1].float()  # [V]
    suffixes = [w[P:] for w in whole]
    E, S = len(reqs), max(len(s) for s in suffixes)
    tokens = P
    if S == 0:  # pragma: no cover - every request has >= 1 continuation token past the prefix
        raise RuntimeError("empty continuation")
    batch_cache = model.new_cache(plan, batch_size=E, max_len=P + S)
    for i in range(len(cache.k)):
        batch_cache.k[i][:, :, :P] = cache.k[i][:, :, :P]
        batch_cache.v[i][:, :, :P] = cache.v[i][:, :, :P]
    batch_cache.pos = P
    pad = suffixes[0][0]
    ids = torch.tensor([s + [pad] * (S - len(s)) for s in suffixes], device=dev)
    logits = _forward(model, ids, cache=batch_cache, plan=plan).float()  # [E, S, V]
    tokens += sum(len(s) for s in suffixes)
    lls = []
    for e, (_ctx, cont) in enumerate(reqs):
        s = suffixes[e]
        # logit rows predicting whole[P:], i.e. row r predicts whole[P + r]; row -1 is 'last'
        rows = torch.cat([last[None], logits[e, : len(s) - 1]], 0)  # predicts whole[P], ..., whole[-1]
        lp = torch.log_softmax(rows, -1)
        tgt = torch.tensor(s, device=lp.device)
        tok_lp = lp.gather(1, tgt[:, None])[:, 0]
        lls.append(float(tok_lp[-len(cont) :].sum()))
    return lls, tokens


def score_item(model: Any, encode: Callable[[str], list[int]] | Any, item: MCItem, *, plan: Any = None,
               mode: str = "shared", bos: int | None = None) -> tuple[ItemScore, int]:
    """Score one item; returns (score, tokens run). ``mode``: ``shared`` (KV-cached context) or ``full``."""
    import torch

    encode = make_encoder(encode)
    reqs = _requests(item, encode, bos)
    limit = getattr(model, "context_length", None)
    if limit is not None:
        longest = max(len(c) + len(k) for c, k in reqs)
        if longest > limit:
            raise UserError(f"item {item.id or ''}: {longest} tokens exceed the model's context of {limit}")
    with torch.inference_mode():
        if mode == "full" or not hasattr(model, "new_cache"):
            lls, tokens = _score_full(model, reqs, plan)
        elif mode == "shared":
            lls, tokens = _score_shared(model, reqs, plan)
        else:
            raise UserError(f"unknown scoring mode {mode!r} (shared or full)")
    return _finish(item, lls, [len(c) for _, c in reqs]), tokens


def evaluate_mc(model: Any, tokenizer: Any, items: Sequence[MCItem], *, plan: Any = None, mode: str = "shared",
                bos: int | None = None, progress: Callable[[int, int], None] | None = None) -> MCResult:
    """acc / acc_norm / acc_bytes of ``model`` (optionally through ``plan``) on ``items``."""
    encode = make_encoder(tokenizer)
    if plan is not None and hasattr(model, "layers"):
        from lminspect.stitch import parse_plan

        plan = parse_plan(plan, len(model.layers))
    scores: list[ItemScore] = []
    tokens = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for k, item in enumerate(items):
        s, n = score_item(model, encode, item, plan=plan, mode=mode, bos=bos)
        scores.append(s)
        tokens += n
        if progress is not None:
            progress(k + 1, len(items))
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = len(scores)
    if n == 0:
        raise UserError("no items to evaluate")
    return MCResult(
        n=n,
        acc=sum(s.pred == s.label for s in scores) / n,
        acc_norm=sum(s.pred_norm == s.label for s in scores) / n,
        acc_bytes=sum(s.pred_bytes == s.label for s in scores) / n,
        seconds=dt,
        tokens=tokens,
        items=scores,
        cpu_seconds=cpu,
    )
