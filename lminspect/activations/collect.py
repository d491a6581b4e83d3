"""The streaming pass: documents -> token batches -> hooked forwards -> accumulators -> results dir.

Batches: every document is tokenized with the model's own tokenizer and cut into chunks of at
most ``seq_len`` tokens; each chunk is one row (attention never crosses documents, every chunk
starts at position 0). A batch is the next ``batch_size`` chunks, right-padded to its longest row;
with causal attention no real token sees the padding, and padded positions are dropped before
any statistic (an index_select, skipped when a batch has no padding). The last batch is cut so
exactly ``tokens`` tokens are used.

Resuming: the stream position (next document, token offset in it) is part of every snapshot, and
batch composition depends only on that position, so a resumed run sees the same batches in the
same order as an uninterrupted one and ends with the same statistics (to float rounding of the
snapshot, which is exact float64). Snapshots are taken every ``save_every`` seconds (0: every
batch), when ``max_batches`` stops a run early, and at the end.

Memory is flat in ``tokens``: accumulators have fixed size, documents are streamed, and kept
token-level data is written through a short-lived ``np.memmap`` window per batch (unmapped right
away, so written pages never accumulate in this process's RSS).

Under torchrun every process cuts the same batches and runs only its own (batch ``b`` on rank
``b % world``); rank 0 merges the statistics and alone writes (``activations.sharded``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lminspect.activations.accumulate import SiteAccumulator
from lminspect.activations.store import (
    FORMAT,
    VERSION,
    ActivationStats,
    TokenWriter,
    load,
    model_identity,
    read_index,
    read_state,
    write_arrays,
    write_index,
    write_state,
)
from lminspect.errors import UserError
from lminspect.models.sites import site_name

if TYPE_CHECKING:  # annotations only
    from lminspect.models.common import LM

STAT_KINDS = ("resid_in", "resid_out", "attn_out", "mlp_out", "mlp_hidden")
ALIASES = {"resid": "resid_out"}
DEFAULT_SITES = ("resid", "attn_out", "mlp_out", "mlp_hidden")
OUR_FILES = ("index.json", "stats.npz", "arrays", "tokens")


@dataclass
class CollectConfig:
    """Everything that decides *which* numbers a run produces (stored in index.json)."""

    data: str = "builtin"
    tokens: int = 50_000
    sites: list[str] = field(default_factory=lambda: list(DEFAULT_SITES))
    plan: str | None = None
    batch_size: int = 8
    seq_len: int = 256
    outlier_k: float = 6.0
    keep_tokens: bool = False
    keep_dtype: str = "float16"
    text_field: str = "text"
    split: str = "train"
    dtype: str = "float32"
    device: str = "cpu"


# ---------------------------------------------------------------------------- sites


def resolve_sites(spec: list[str] | tuple[str, ...] | str, n_pos: int) -> list[str]:
    """``["resid", "mlp_hidden.3", ...]`` -> exact site names ``"{kind}.{pos}"`` in plan order."""
    if isinstance(spec, str):
        spec = [spec]
    items = [p.strip() for s in spec for p in str(s).split(",") if p.strip()]
    if not items:
        raise UserError("no sites given (valid: " + ", ".join(("resid", *STAT_KINDS)) + ")")
    want: set[tuple[str, int]] = set()
    for item in items:
        kind, dot, pos = item.partition(".")
        kind = ALIASES.get(kind, kind)
        if kind not in STAT_KINDS:
            why = " (attention probabilities are not per-dimension activations)" if kind == "attn_probs" else ""
            raise UserError(f"unknown site {item!r}{why}; valid sites: resid (= resid_out), "
                            f"{', '.join(STAT_KINDS)}, optionally KIND.POS with POS in 0..{n_pos - 1}")
        if dot:
            if not pos.isdigit() or int(pos) >= n_pos:
                raise UserError(f"site {item!r}: position must be an integer in 0..{n_pos - 1} (the plan has "
                                f"{n_pos} layer calls)")
            want.add((kind, int(pos)))
        else:
            want.update((kind, p) for p in range(n_pos))
    kind_order = {k: i for i, k in enumerate(STAT_KINDS)}
    return [site_name(k, p) for k, p in sorted(want, key=lambda kp: (kp[1], kind_order[kp[0]]))]


# ---------------------------------------------------------------------------- data


def iter_chunks(source: str, tok: Any, seq_len: int, *, split: str, text_field: str, doc: int = 0,
                offset: int = 0) -> Iterator[tuple[int, int, list[int]]]:
    """``(doc index, token offset, ids)`` chunks of at most ``seq_len`` tokens from position (doc, offset)."""
    from lminspect.documents import iter_documents

    for i, text in iter_documents(source, split=split, field=text_field, start=doc):
        if not text:
            continue
        ids = tok.encode(text)
        start = offset if i == doc else 0
        for off in range(start, len(ids), seq_len):
            yield i, off, ids[off:off + seq_len]


class _Peekable:
    def __init__(self, it: Iterator[Any]) -> None:
        self._it = it
        self._buf: list[Any] = []

    def peek(self) -> Any | None:
        if not self._buf:
            try:
                self._buf.append(next(self._it))
            except StopIteration:
                return None
        return self._buf[0]

    def next(self) -> Any | None:
        if self._buf:
            return self._buf.pop()
        try:
            return next(self._it)
        except StopIteration:
            return None


# ---------------------------------------------------------------------------- the hook


class SiteHook:
    """The engine hook callback: reduce each site's activations into its accumulator.

    ``ctx`` holds the current batch: ``idx`` (flat indices of real tokens in ``[B*T]``, None
    when the batch has no padding), ``rows`` (``[n, 2]`` doc index / token offset) and ``row0``
    (first row in the kept-token files). Shared with benchmarks/bench_activations.py so the
    benchmark times exactly this code.
    """

    FIRE_KINDS = frozenset({"mlp_hidden"})

    def __init__(self, accs: dict[str, SiteAccumulator], outlier_k: float, writer: TokenWriter | None = None,
                 ranges: dict[str, float] | None = None, sites: list[str] | None = None,
                 yardsticks: Any = None) -> None:
        self.accs = accs
        self.outlier_k = outlier_k
        self.writer = writer
        self.ranges = dict(ranges or {})  # histogram ranges fixed before this process started (a resumed run)
        self.sites = sites
        self.yardsticks = yardsticks  # under torchrun: activations.sharded.Yardsticks
        self.ctx: dict[str, Any] = {"idx": None, "rows": None, "row0": 0}

    def __call__(self, name: str, t: Any) -> None:
        x = t.reshape(-1, t.shape[-1])
        idx = self.ctx["idx"]
        if idx is not None:
            x = x.index_select(0, idx)
        acc = self.accs.get(name)
        if acc is None:
            acc = self.accs[name] = SiteAccumulator(x.shape[1], outlier_k=self.outlier_k,
                                                    fire=name.partition(".")[0] in self.FIRE_KINDS,
                                                    hist_range=self.ranges.get(name, 0.0))
        if self.yardsticks is not None and acc.peer is None:
            acc.peer = self.yardsticks.by_site[name]
        acc.update(x, self.ctx["rows"])
        if self.writer is not None:
            self.writer.write(name, self.ctx["row0"], x.float().cpu().numpy(), dim=x.shape[1])
        return None


# ---------------------------------------------------------------------------- the run


def _check_out(out: Path, index: dict[str, Any] | None, identity: dict[str, Any], settings: dict[str, Any],
               overwrite: bool) -> bool:
    """Decide whether ``out`` may be used; True means resume from its snapshot."""
    if index is None:
        if out.exists() and _user_entries(out) and not overwrite:
            raise UserError(f"{out} exists and is not an activations results dir; refusing to write into it "
                            "(hint: pick another --out, or --overwrite)")
        return False
    if overwrite:
        return False
    old = index.get("model", {})
    if old.get("fingerprint") != identity["fingerprint"]:
        raise UserError(f"{out} holds activation statistics of another model ({old.get('path')}, fingerprint "
                        f"{old.get('fingerprint')}); nothing overwritten (hint: --overwrite, or another --out)")
    old_settings = index.get("settings", {})
    diff = [k for k in settings if old_settings.get(k) != settings[k]]
    if diff:
        k = diff[0]
        raise UserError(f"{out} holds statistics collected with different settings ({k}: {old_settings.get(k)!r} "
                        f"vs {settings[k]!r}); nothing overwritten (hint: --overwrite, or another --out)")
    return (out / "stats.npz").is_file()


def _user_entries(out: Path) -> list[Path]:
    """What is in ``out`` besides our lock file and a dead writer's temporaries."""
    from lminspect.runlock import LOCK_NAME

    return [p for p in out.iterdir() if p.name != LOCK_NAME and not (p.name.startswith(".") and
                                                                      p.name.endswith((".tmp", ".old")))]


def remove_leftovers(out: Path) -> None:
    """Delete temporaries (``.stats.npz.*.tmp``, ``.arrays.*``) a killed run left in ``out``;
    call only while holding ``out``'s lock."""
    import shutil

    if not out.is_dir():
        return
    for p in out.iterdir():
        if p.name.startswith((".stats.npz.", ".index.json.", ".arrays.")):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _clear(out: Path) -> None:
    import shutil

    for name in OUR_FILES:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def collect(model: Any, out: str | Path, config: CollectConfig | None = None, *, overwrite: bool = False,
            save_every: float = 30.0, max_batches: int | None = None, progress: bool | None = None,
            quick: Any = None, **kw: Any) -> ActivationStats | None:
    """Collect activation statistics of ``model`` (anything ``open_store`` takes, or a store) into ``out``.

    ``kw`` overrides fields of ``config``. ``max_batches`` stops after that many batches *in this
    call* (interruption for tests; the run resumes on the next call). Returns the loaded results.
    Under torchrun the batches are shared out (``activations.sharded``) and only rank 0 writes and
    returns the results; the other ranks return None. ``quick(seconds)`` makes a long collection
    print an up-front estimate (``runtime.Estimate``) with that quicker variant.
    """
    from lminspect.distributed import join, local_device, on_main
    from lminspect.models.open import open_model

    cfg = CollectConfig(**{**(asdict(config) if config else {}), **kw})
    _validate(cfg, save_every)
    rank, world, _ = join(cfg.device)
    if world > 1 and cfg.keep_tokens:
        raise UserError("--keep-tokens is not supported under torchrun (only rank 0 writes); run it in one process")
    out = Path(out)
    store = open_model(model, lazy=True).store
    identity = model_identity(store)
    # cheap checks before the (slow) model load: the plan and the sites need only the layer count
    plan, plan_str, sites, settings = _plan_and_settings(store, cfg)
    _check_batch_memory(store, cfg)
    if cfg.keep_tokens:
        _check_keep_disk(store, sites, cfg, out)
    kept: dict[str, Any] = {}
    start = on_main(lambda: _open_out(out, identity, settings, overwrite, cfg.tokens, kept), rank, world)
    if start["done"]:
        if rank != 0:
            return None
        print(f"lminspect: {out} is already complete ({start['prog']['tokens_done']} tokens)", file=sys.stderr)
        return load(out)
    prog = start["prog"]
    if rank == 0 and int(prog["tokens_done"]) > 0:
        print(f"lminspect: {out}: continuing from {int(prog['tokens_done']):,} to {cfg.tokens:,} tokens",
              file=sys.stderr)
    # weights as stored (a 7B bf16 / GGUF is not copied to float32; exact per-layer dequantization)
    _, lm, tok = open_model(store, dtype=cfg.dtype, device=local_device(cfg.device, rank, world), weights="auto")
    chunks = _Peekable(iter_chunks(cfg.data, tok, cfg.seq_len, split=cfg.split, text_field=cfg.text_field,
                                   doc=int(prog["doc"]), offset=int(prog["offset"])))
    first = chunks.peek()  # data errors (missing file, no text field) surface before anything is written
    if first is None and prog["tokens_done"] == 0:
        raise UserError(f"data {cfg.data!r}: no text found")

    index = {"format": FORMAT, "version": VERSION, "model": identity, "plan": plan_str,
             "plan_layers": [c.index for c in plan], "sites": sites, "settings": settings,
             "tokens_target": cfg.tokens, "created": start["created"]}
    if rank == 0:
        if start["clear"]:
            _clear(out)
        out.mkdir(parents=True, exist_ok=True)
    hook = _make_hook(cfg, out, sites, start, kept.get("accs", {}), rank, world)

    def save(complete: bool = False) -> None:
        from lminspect.activations.sharded import merge_to_main

        merge_to_main(hook.accs, rank, world)
        if rank == 0:
            prog["complete"] = complete
            write_state(out, hook.accs, prog)
            write_index(out, {**index, "progress": dict(prog), "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})

    show = rank == 0 and (progress if progress is not None else sys.stderr.isatty())
    bar = _Bar(cfg.tokens, int(prog["tokens_done"]), show, plain=rank == 0 and progress is None and not show,
               quick=quick if rank == 0 else None)
    run = _Pass(lm, plan, chunks, cfg, prog, hook, rank, world)
    try:
        exhausted = run.loop(save, save_every, max_batches, bar)
    finally:
        bar.close()
    done = prog["tokens_done"] >= cfg.tokens or exhausted
    prog["exhausted"] = exhausted
    if exhausted and prog["tokens_done"] < cfg.tokens and rank == 0:
        print(f"lminspect: data {cfg.data!r} has only {prog['tokens_done']} tokens (asked for {cfg.tokens}); "
              f"using {prog['tokens_done']}", file=sys.stderr)
    save(complete=done)
    if rank != 0:
        return None
    stats = load(out)
    if done:
        write_arrays(out, stats)
    return stats


def _make_hook(cfg: CollectConfig, out: Path, sites: list[str], start: dict[str, Any],
               accs: dict[str, SiteAccumulator], rank: int, world: int) -> SiteHook:
    """The hook with this process's accumulators (a resumed run's, on rank 0), the kept-token
    writer, and under torchrun the yardsticks shared with the other ranks."""
    writer = TokenWriter(out / "tokens", cfg.tokens, cfg.keep_dtype) if cfg.keep_tokens else None
    yardsticks = None
    if world > 1:
        from lminspect.activations.sharded import Yardsticks

        yardsticks = Yardsticks(sites, rank, world, start["summaries"])
    return SiteHook(accs, cfg.outlier_k, writer, ranges=start["ranges"], sites=sites, yardsticks=yardsticks)


def _validate(cfg: CollectConfig, save_every: float) -> None:
    if cfg.tokens < 1:
        raise UserError(f"--tokens must be at least 1 (got {cfg.tokens})")
    if cfg.batch_size < 1 or cfg.seq_len < 1:
        raise UserError("--batch-size and --seq-len must be at least 1")
    if cfg.keep_dtype not in ("float16", "float32"):
        raise UserError(f"keep dtype {cfg.keep_dtype!r}: expected float16 or float32")
    from lminspect import validate

    validate.finite("--outlier-k", cfg.outlier_k, positive=True)
    validate.finite("--save-every", save_every, minimum=0.0)
    validate.device(cfg.device)


def _plan_and_settings(store: Any, cfg: CollectConfig) -> tuple[Any, str, list[str], dict[str, Any]]:
    """The parsed plan, its canonical text, the exact sites, and the settings a resumed run must match."""
    from lminspect.stitch import parse_plan, plan_to_string

    n_layers = _n_layers(store)
    plan = parse_plan(cfg.plan, n_layers)
    plan_str = plan_to_string(plan, n_layers)
    sites = resolve_sites(cfg.sites, len(plan))
    settings = {"plan": plan_str, "sites": sites, "data": cfg.data, "split": cfg.split,
                "text_field": cfg.text_field, "seq_len": cfg.seq_len, "batch_size": cfg.batch_size,
                "outlier_k": cfg.outlier_k, "keep_tokens": cfg.keep_tokens, "dtype": cfg.dtype}
    if cfg.keep_tokens:
        settings["keep_dtype"] = cfg.keep_dtype
        settings["tokens"] = cfg.tokens  # kept-token files are preallocated to this size
    return plan, plan_str, sites, settings


def _open_out(out: Path, identity: dict[str, Any], settings: dict[str, Any], overwrite: bool, tokens: int,
              kept: dict[str, Any]) -> dict[str, Any]:
    """Rank 0: may ``out`` be used, and does the run resume? The accumulators of a resumed run go
    into ``kept``; what every rank needs (progress, histogram ranges, ...) is returned."""
    from lminspect.activations.sharded import hist_ranges, summaries

    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    index = read_index(out) if out.is_dir() else None
    resume = _check_out(out, index, identity, settings, overwrite)
    prog: dict[str, Any] = {"tokens_done": 0, "batches": 0, "doc": 0, "offset": 0, "complete": False,
                            "exhausted": False, "elapsed_s": 0.0}
    if not resume:
        return {"done": False, "prog": prog, "ranges": {}, "summaries": {}, "created": now,
                "clear": index is not None or (overwrite and out.exists())}
    accs, prog = read_state(out)
    if prog.get("complete") and (prog["tokens_done"] >= tokens or prog.get("exhausted")):
        return {"done": True, "prog": prog}
    prog["complete"] = False
    kept["accs"] = accs
    return {"done": False, "prog": prog, "ranges": hist_ranges(accs), "summaries": summaries(accs),
            "created": (index or {}).get("created", now), "clear": False}


def _next_batch(chunks: _Peekable, prog: dict[str, Any], cfg: CollectConfig) -> tuple[list[tuple[int, int, list[int]]], bool]:
    """The stream's next batch (at most ``batch_size`` chunks, never past ``cfg.tokens`` tokens) and
    whether the data ran out; moves ``prog`` (stream position, tokens, batches) past it."""
    need = cfg.tokens - prog["tokens_done"]
    rows: list[tuple[int, int, list[int]]] = []
    exhausted = False
    while len(rows) < cfg.batch_size and need > 0:
        ch = chunks.next()
        if ch is None:
            exhausted = True
            break
        d, off, ids = ch
        ids = ids[:need]
        rows.append((d, off, ids))
        need -= len(ids)
    if rows:
        d, off, ids = rows[-1]
        prog["doc"], prog["offset"] = d, off + len(ids)
        nxt = chunks.peek()
        if nxt is not None and nxt[0] != d:
            prog["doc"], prog["offset"] = nxt[0], nxt[1]
        prog["tokens_done"] += sum(len(r[2]) for r in rows)
        prog["batches"] += 1
    return rows, exhausted


class _Pass:
    """The streaming loop: cut batches in stream order; global batch b runs on rank b % world."""

    def __init__(self, lm: LM, plan: Any, chunks: _Peekable, cfg: CollectConfig, prog: dict[str, Any],
                 hook: SiteHook, rank: int, world: int) -> None:
        self.lm, self.plan, self.chunks, self.cfg, self.prog = lm, plan, chunks, cfg, prog
        self.hook, self.rank, self.world = hook, rank, world

    def forward(self, row0: int, rows: list[tuple[int, int, list[int]]]) -> None:
        """One hooked forward of ``rows`` (right-padded; padding dropped before any statistic)."""
        import torch

        device, ctx, writer = self.lm.device, self.hook.ctx, self.hook.writer
        lens = [len(r[2]) for r in rows]
        T = max(lens)
        ids_t = torch.zeros(len(rows), T, dtype=torch.long)
        for i, (_, _, ids) in enumerate(rows):
            ids_t[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        pos = np.concatenate([np.stack([np.full(n, d, dtype=np.int64), np.arange(off, off + n, dtype=np.int64)], 1)
                              for (d, off, _), n in zip(rows, lens, strict=True)])
        if all(n == T for n in lens):
            ctx["idx"] = None
        else:
            flat = np.concatenate([np.arange(i * T, i * T + n) for i, n in enumerate(lens)])
            ctx["idx"] = torch.from_numpy(flat).to(device)
        ctx["rows"], ctx["row0"] = pos, row0
        # no site reads the logits: the head runs on the last column only (a [B, T, vocab] block
        # and its matmul were a third of a Falcon-RW-1B batch's memory)
        self.lm(ids_t.to(device), plan=self.plan, last_only=True)
        if writer is not None:
            writer.write("ids", row0, np.concatenate([np.asarray(r[2], dtype=np.int32) for r in rows]), dtype=np.int32)
            writer.write("pos", row0, pos, dim=2, dtype=np.int64)

    def _group(self, budget: int | None) -> tuple[list[tuple[int, list[Any]]], bool]:
        """The next ``world`` batches of the stream (fewer at its end or at ``budget``)."""
        group: list[tuple[int, list[Any]]] = []
        exhausted = False
        while len(group) < self.world and self.prog["tokens_done"] < self.cfg.tokens and not exhausted:
            if budget is not None and len(group) >= budget:
                break
            row0 = int(self.prog["tokens_done"])
            rows, exhausted = _next_batch(self.chunks, self.prog, self.cfg)
            if not rows:
                break
            group.append((row0, rows))
        return group, exhausted

    def loop(self, save: Any, save_every: float, max_batches: int | None, bar: Any) -> bool:
        """Run until ``cfg.tokens`` tokens, the data's end or ``max_batches``; True when the data ran out."""
        import torch

        from lminspect.distributed import broadcast

        prog, world = self.prog, self.world
        t_start = last_save = time.perf_counter()
        elapsed0 = float(prog.get("elapsed_s", 0.0))
        done_here, exhausted = 0, False
        with torch.inference_mode(), self.lm.hooks(self.hook, self.hook.sites):
            while prog["tokens_done"] < self.cfg.tokens and not exhausted:
                group, exhausted = self._group(None if max_batches is None else max_batches - done_here)
                if not group:
                    break
                done_here += len(group)
                if self.rank < len(group):
                    self.forward(*group[self.rank])
                elif self.hook.yardsticks is not None:  # the stream's last step: no batch for this rank
                    self.hook.yardsticks.idle()
                prog["elapsed_s"] = elapsed0 + time.perf_counter() - t_start
                bar.advance(sum(len(r[2]) for _, rows in group for r in rows))
                if broadcast(save_every <= 0 or time.perf_counter() - last_save >= save_every, world):
                    save()
                    last_save = time.perf_counter()
                if max_batches is not None and done_here >= max_batches:
                    break
        if not exhausted and prog["tokens_done"] < self.cfg.tokens and self.chunks.peek() is None:
            exhausted = True
        return exhausted


def _check_batch_memory(store: Any, cfg: CollectConfig) -> None:
    """One forward of --batch-size x --seq-len: the MLP hidden states dominate (the logits are
    of the last column only), beside the model's per-layer buffers (its load check)."""
    from lminspect.limits import check_count, check_memory
    from lminspect.models import config_from_hf

    check_count("--seq-len", cfg.seq_len, 1 << 20)
    check_count("--batch-size", cfg.batch_size, 1 << 20)
    mcfg = config_from_hf(dict(store.config or {}), getattr(store, "arch", None))
    per_token = 4 * (4 * int(mcfg.ffn_dim) + 8 * int(mcfg.dim))
    logits = 4 * cfg.batch_size * int(mcfg.vocab_size)
    check_memory(f"a batch of {cfg.batch_size} x {cfg.seq_len} tokens",
                 cfg.batch_size * cfg.seq_len * per_token + logits)


def _check_keep_disk(store: Any, sites: list[str], cfg: CollectConfig, out: Path) -> None:
    """--keep-tokens preallocates sparse files: refuse before they fill the disk half-way."""
    from lminspect.limits import check_disk
    from lminspect.models import config_from_hf

    mcfg = config_from_hf(dict(store.config or {}), getattr(store, "arch", None))
    width = sum(int(mcfg.ffn_dim) if s.startswith("mlp_hidden") else int(mcfg.dim) for s in sites)
    per_token = width * np.dtype(cfg.keep_dtype).itemsize + 4 + 16  # + token id and (doc, offset)
    check_disk(f"--keep-tokens for {cfg.tokens:,} tokens x {len(sites)} sites", per_token * cfg.tokens, out)


def _n_layers(store: Any) -> int:
    """The store's layer count, after checking its config (a bad config fails here, before any output)."""
    from lminspect.models import config_from_hf

    config_from_hf(dict(store.config or {}), getattr(store, "arch", None))
    if not store.n_layers:
        raise UserError(f"{store.path}: cannot tell its number of layers")
    return int(store.n_layers)


class _Bar:
    """rich progress with tokens/s on stderr; plain periodic lines (``runtime.Progress``) when
    stderr is not a terminal and nobody asked for silence."""

    def __init__(self, total: int, done: int, show: bool, plain: bool = False, quick: Any = None) -> None:
        from lminspect.runtime import Estimate

        self._p = None
        self._plain = None
        self._est = Estimate(total, quick, start=done) if quick is not None else None
        self._seen = done
        if plain:
            from lminspect.runtime import Progress

            self._plain = Progress("activations", total, "tokens", bar=False)
            self._done = done
        if not show:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._p = Progress(TextColumn("activations"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[rate]} tok/s"), TimeRemainingColumn(),
                           console=Console(stderr=True), transient=False)
        self._p.start()
        self._t0 = time.perf_counter()
        self._n = 0
        self._task = self._p.add_task("collect", total=total, completed=done, rate="-")

    def advance(self, n: int) -> None:
        self._seen += n
        if self._est is not None:
            self._est.update(self._seen)
        if self._plain is not None:
            self._done += n
            self._plain.update(self._done)
        if self._p is None:
            return
        self._n += n
        rate = self._n / max(time.perf_counter() - self._t0, 1e-9)
        self._p.update(self._task, advance=n, rate=f"{rate:,.0f}")

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
