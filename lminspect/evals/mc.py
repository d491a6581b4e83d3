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

Standard errors ``acc_stderr`` / ``acc_norm_stderr`` are lm-eval's: the sample standard
deviation of the 0/1 hits divided by sqrt(n).

Speed: the harness runs one full ``ctx + ending`` forward per ending. Here (``mode="shared"``)
several items run per forward, each context once, and every ending on top of its context's
keys/values (``lminspect.evals.mc_batch``); ``mode="full"`` is the harness way, kept as a check.
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
    "mc_result",
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
    acc_stderr: float = float("nan")  # sample standard deviation / sqrt(n), as lm-eval reports it
    acc_norm_stderr: float = float("nan")
    layer_calls: int = 0  # decoder-layer calls run (batched scoring), summed over batches

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
            "acc_stderr": self.acc_stderr,
            "acc_norm_stderr": self.acc_norm_stderr,
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
    hub = "ctx_a" in row or "activity_label" in row  # the hub's rows store the label as a string
    if isinstance(label, bool) or (isinstance(label, str) and not hub):
        raise UserError(f"{where}: 'label' must be an integer index into endings (write 1, not {label!r})")
    try:
        label = int(label)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{where}: 'label' must be an integer index into endings, got {label!r}") from None
    if isinstance(row.get("label"), float) and row["label"] != label:
        raise UserError(f"{where}: 'label' must be an integer index into endings, got {row['label']!r}")
    if not 0 <= label < len(endings):
        raise UserError(f"{where}: label {label} out of range for {len(endings)} endings")
    if any(not e.strip() for e in endings):  # an empty ending scores log-likelihood 0: always "right"
        raise UserError(f"{where}: ending {next(i for i, e in enumerate(endings) if not e.strip())} is empty")
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


def _checked_requests(model: Any, encode: Callable[[str], list[int]], item: MCItem, bos: int | None):
    reqs = _requests(item, encode, bos)
    limit = getattr(model, "context_length", None)
    if limit is not None:
        longest = max(len(c) + len(k) for c, k in reqs)
        if longest > limit:
            raise UserError(f"item {item.id or ''}: {longest} tokens exceed the model's context of {limit}")
    return reqs


def _batched(model: Any, mode: str) -> bool:
    if mode not in ("shared", "full"):
        raise UserError(f"unknown scoring mode {mode!r} (shared or full)")
    return mode == "shared" and hasattr(model, "prepare") and getattr(model, "_hooks", None) is None


def score_item(model: Any, encode: Callable[[str], list[int]] | Any, item: MCItem, *, plan: Any = None,
               mode: str = "shared", bos: int | None = None) -> tuple[ItemScore, int]:
    """Score one item; returns (score, tokens run). ``mode``: ``shared`` (context once, endings
    batched on top of its keys/values) or ``full`` (one ``ctx + ending`` forward per ending)."""
    res = evaluate_mc(model, encode, [item], plan=plan, mode=mode, bos=bos)
    return res.items[0], res.tokens


def mc_result(items: Sequence[MCItem], lls: Sequence[list[float]], n_tok: Sequence[list[int]], *,
              seconds: float, cpu_seconds: float, tokens: int, layer_calls: int = 0) -> MCResult:
    """Metrics (and lm-eval's standard errors) from per-item, per-ending log-likelihoods."""
    if not items:
        raise UserError("no items to evaluate")
    scores = [_finish(it, list(ll), list(nt)) for it, ll, nt in zip(items, lls, n_tok, strict=True)]
    n = len(scores)

    def mean_stderr(hits: list[bool]) -> tuple[float, float]:
        m = sum(hits) / n
        var = sum((h - m) ** 2 for h in hits) / (n - 1) if n > 1 else float("nan")
        return m, math.sqrt(var / n)  # lm-eval: sample standard deviation / sqrt(n)

    acc, acc_se = mean_stderr([s.pred == s.label for s in scores])
    norm, norm_se = mean_stderr([s.pred_norm == s.label for s in scores])
    nbytes, _ = mean_stderr([s.pred_bytes == s.label for s in scores])
    return MCResult(n=n, acc=acc, acc_norm=norm, acc_bytes=nbytes, seconds=seconds, tokens=tokens, items=scores,
                    cpu_seconds=cpu_seconds, acc_stderr=acc_se, acc_norm_stderr=norm_se, layer_calls=layer_calls)


def evaluate_mc(model: Any, tokenizer: Any, items: Sequence[MCItem], *, plan: Any = None, mode: str = "shared",
                bos: int | None = None, progress: Callable[[int, int], None] | None = None,
                batch_size: int | None = None) -> MCResult:
    """acc / acc_norm / acc_bytes (+ standard errors) of ``model``, optionally through ``plan``.

    ``batch_size``: items per forward in ``shared`` mode (None = auto, from the items' lengths)."""
    encode = make_encoder(tokenizer)
    if plan is not None and hasattr(model, "layers"):
        from lminspect.stitch import parse_plan

        plan = parse_plan(plan, len(model.layers))
    reqs = [_checked_requests(model, encode, it, bos) for it in items]
    n_tok = [[len(c) for _, c in r] for r in reqs]
    if _batched(model, mode):
        from lminspect.evals.mc_batch import make_request, score_requests

        batch_reqs = [make_request(r, f"item {it.id or k}") for k, (it, r) in enumerate(zip(items, reqs, strict=True))]
        plan = model._check_plan(plan)
        out, st = score_requests(model, batch_reqs, {"plan": plan}, batch_size=batch_size, progress=progress)
        return mc_result(items, out["plan"], n_tok, seconds=st.seconds, cpu_seconds=st.cpu_seconds,
                         tokens=st.tokens, layer_calls=st.calls_run)
    import torch

    lls: list[list[float]] = []
    tokens = 0
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for k, r in enumerate(reqs):
            ll, n = _score_full(model, r, plan)
            lls.append(ll)
            tokens += n
            if progress is not None:
                progress(k + 1, len(items))
    return mc_result(items, lls, n_tok, seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0,
                     tokens=tokens)
