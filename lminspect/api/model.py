"""``li.open(ref)`` -> :class:`Model`: one handle over the lazy weight store and the engine.

Opening reads headers only (``lminspect.weights.open_store``); the torch model and the
tokenizer are built the first time something needs them (``generate``, ``run_with_cache``,
evals), and are shared by every view of the model (``m.stitch(plan)``). Tensors come back
as :class:`Tensor` handles (name, shape, dtype, file) that turn into numpy on request.

Navigation follows the canonical names of docs/ARCHITECTURE.md: ``m["layers.3.attn.q"]``,
``m.layers[3].attn.q``, ``m.embed.tokens``, ``m.norm``; the format's own names
(``m["blk.3.attn_q.weight"]``) work too. ``dir()`` lists what exists, so tab completion works.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lminspect.api.lens import LensMethods
from lminspect.api.table import Figure, Table, fmt
from lminspect.errors import UserError
from lminspect.fsutil import human_bytes

if TYPE_CHECKING:  # annotations only: opening a model imports neither torch nor the evals
    from lminspect.evals.mc import MCResult
    from lminspect.evals.perplexity import PPLResult
    from lminspect.evals.sweep import SweepResult
    from lminspect.models import LM
    from lminspect.models.open import OpenedModel
    from lminspect.tokenizer import Tokenizer
    from lminspect.weights import TensorStore

# the names of lminspect.weights.stats (and of `lminspect stats`' columns); layer: the block number
# (None outside the blocks), alpha_warning: weightwatcher's under-/over-trained flag ("" when fine)
STAT_COLUMNS = ("name", "layer", "shape", "dtype", "mean", "std", "rms", "absmax", "kurtosis", "frac_near_zero",
                "spectral_norm", "stable_rank", "effective_rank", "alpha", "alpha_D", "alpha_tail", "alpha_warning")


# display order of canonical children (the order data flows through a block)
_ORDER = {"embed": 0, "tokens": 0, "positions": 1, "layers": 2, "attn_norm": 3, "attn": 4, "mlp_norm": 5, "mlp": 6,
          "q": 7, "k": 8, "v": 9, "o": 10, "gate": 11, "up": 12, "down": 13, "norm": 20, "head": 21}


class TensorStats(dict):
    """The dict of ``lminspect.weights.stats`` with a repr that shortens long lists."""

    def __repr__(self) -> str:
        parts = []
        for k, v in self.items():
            if isinstance(v, list) and len(v) > 6:
                v = f"[{', '.join(fmt(x) for x in v[:4])}, ... ({len(v)} values)]"
            else:
                v = fmt(v)
            parts.append(f"  {k}: {v}")
        return "TensorStats(\n" + "\n".join(parts) + "\n)"


class Tensor:
    """A handle on one stored tensor; ``.numpy()`` (or ``np.asarray(t)``) reads it."""

    def __init__(self, store: Any, name: str) -> None:
        info = store.info(name)  # raises a UserError naming the model for unknown names
        if name != info.name and not name.endswith((".weight", ".bias")):
            name = name + ".weight"  # lookups may omit ".weight"
        self._store = store
        self.lookup = name  # what the array is read by
        self.stored_name = info.name  # the format's own name
        self.canonical = info.canonical if name == info.name else name
        self.name = self.canonical or info.name
        self.dtype = info.dtype  # dtype as stored (F32, BF16, Q4_1, ...)
        self.nbytes = info.nbytes
        self.source = Path(store.file_of(name))
        # shape in numpy order: the stored shape for own names, the canonical [out, in] shape otherwise
        self.shape: tuple[int, ...] = tuple(info.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def numpy(self) -> np.ndarray:
        """The array: a memmap view where the format allows, else converted to float32."""
        return self._store[self.lookup]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self.numpy()
        return a.astype(dtype) if dtype is not None else a

    def torch(self) -> Any:
        import torch

        return torch.from_numpy(np.array(self.numpy(), dtype=np.float32))

    def stats(self, svd: bool = True) -> TensorStats:
        """Moments, histogram and (2-D) spectrum, cached on disk; see lminspect.weights.stats."""
        return TensorStats(self._store.stats(self.lookup, svd=svd))

    def hist(self) -> Figure:
        """The value histogram as text bars, as ``lminspect stats -t NAME`` prints it."""
        from lminspect.plots import stats_histogram

        text = stats_histogram(self._store.stats(self.lookup, svd=False))
        return Figure(text or f"{self.name}: constant, no histogram", title=f"{self.name} histogram")

    def heads(self) -> np.ndarray:
        """Per-head view of an attention projection: q/k/v ``[heads, head_dim, in]``, o ``[heads, out, head_dim]``."""
        return self._store.heads(self.lookup)

    def norm(self) -> float:
        """Frobenius norm."""
        return float(np.linalg.norm(np.asarray(self.numpy(), dtype=np.float32).reshape(-1)))

    @property
    def bias(self) -> Tensor | None:
        """The bias beside a ``.weight`` (None when the layer has none)."""
        if self.canonical and self.canonical.endswith(".weight"):
            b = self.canonical[: -len("weight")] + "bias"
            if b in self._store:
                return Tensor(self._store, b)
        return None

    def __repr__(self) -> str:
        own = f" (stored as {self.stored_name})" if self.stored_name != self.name else ""
        shape = "x".join(map(str, self.shape)) or "()"
        from lminspect.weights.provenance import dtype_label

        return (f"Tensor {self.name}{own}\n  shape {shape}  dtype {dtype_label(self._store, self.lookup)}  size {self.size:,} "
                f"({human_bytes(self.nbytes)} on disk)\n  from {self.source}")


class Node:
    """A group of canonical names (``layers.3``, ``layers.3.attn``, ``embed``): attributes are children."""

    def __init__(self, model: Model, prefix: str) -> None:
        self._model = model
        self._prefix = prefix

    def _children(self) -> list[str]:
        return self._model._children(self._prefix)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        child = self._model._child(self._prefix, name)
        if child is None:
            raise AttributeError(f"{self._prefix} has no {name!r} (has: {', '.join(self._children())})")
        return child

    def __getitem__(self, key: int | str) -> Any:
        return self.__getattr__(str(key))

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | {c for c in self._children() if c.isidentifier()})

    def __len__(self) -> int:
        return len(self._children())

    def __iter__(self) -> Iterator[Any]:
        for c in self._children():
            yield self._model._child(self._prefix, c)

    def names(self) -> list[str]:
        """Canonical names under this node."""
        p = self._prefix + "."
        return [n for n in self._model._canon if n.startswith(p)]

    def stats(self, svd: bool = True) -> Table:
        return self._model.stats(self._prefix + ".*", svd=svd)

    def __repr__(self) -> str:
        rows = []
        for n in self.names():
            info = self._model.store.info(n)
            rows.append({"name": n, "stored as": info.name, "dtype": info.dtype})
        return Table(rows, title=f"{self._prefix} ({len(rows)} tensors)").text()


class Layers(Node):
    """``m.layers``: a sequence of layer nodes."""

    def __init__(self, model: Model) -> None:
        super().__init__(model, "layers")

    def _children(self) -> list[str]:
        return [str(i) for i in range(len(self))]

    def __len__(self) -> int:
        return self._model.n_layers

    def __getitem__(self, key: int | str) -> Any:  # type: ignore[override]
        i = int(key)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"layer {key} out of range (model has {n} layers)")
        return Node(self._model, f"layers.{i % n}")

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        first = self._model._children("layers.0") if len(self) else []
        return f"<{len(self)} layers of {self._model.name}: each has {', '.join(first)}>"


class Tensors(Mapping):
    """``m.tensors``: the format's own names in file order -> :class:`Tensor`; canonical names also look up."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getitem__(self, name: str) -> Tensor:
        if name not in self._store:
            raise KeyError(name)
        return Tensor(self._store, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._store.keys())

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, name: object) -> bool:
        return name in self._store

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()))

    def _ipython_key_completions_(self) -> list[str]:
        return list(self._store.keys()) + list(self._store.canonical_names())

    def table(self, pattern: str = "*") -> Table:
        from lminspect.weights.naming import select_tensors

        rows = []
        for n in select_tensors(self._store, [pattern]):
            i = self._store.info(n)
            rows.append({"name": i.name, "shape": list(i.shape), "dtype": i.dtype,
                             "size": int(np.prod(i.shape, dtype=np.int64)), "canonical": i.canonical or ""})
        return Table(rows, title=f"{self._store.name}: {len(rows)} tensors ({human_bytes(self._store.total_bytes)})")

    def __repr__(self) -> str:
        return self.table().text()

    def __rich__(self) -> Any:
        return self.table().__rich__()


class Activations(dict):
    """``{site: array}`` from ``run_with_cache``; the repr lists sites with their shapes."""

    def __repr__(self) -> str:
        rows = [{"site": k, "shape": list(v.shape), "dtype": str(v.dtype)} for k, v in self.items()]
        return Table(rows, title=f"{len(rows)} activation sites").text()


class Completion(str):
    """Generated text (a ``str``) that also carries ``.stats`` (tokens, TTFT, tok/s, stop reason)."""

    stats: Any = None


class Sweep:
    """``Model.sweep``'s result: ``evals.sweep.SweepResult`` (``.rows``, ``.results``, ``.summary()``,
    every field) plus ``.table()``, the rows as a Table titled with the summary line."""

    def __init__(self, result: SweepResult) -> None:
        self.result = result

    def __getattr__(self, name: str) -> Any:
        if name == "result":
            raise AttributeError(name)
        return getattr(self.result, name)

    def table(self) -> Table:
        return Table(self.result.rows, title=self.result.summary())

    def __repr__(self) -> str:
        return self.table().text()


class _Shared:
    """State shared by a model and its stitched views: the lazily opened model
    (``models.open.OpenedModel``: store, engine, tokenizer, threads) and its display label."""

    def __init__(self, opened: OpenedModel) -> None:
        self.opened = opened
        self.store: TensorStore = opened.store
        self.label: str | None = None  # what the user called it, when that is a short name (smollm2)


def _mergekit_model(sh: _Shared, plan: Any) -> _Shared:
    """A mergekit plan whose ``scale`` multiplies weights, as the exported model (a temp folder
    kept for the session; the engine is a float copy, whatever ``weights`` says)."""
    import atexit
    import shutil

    from lminspect.models.open import open_model
    from lminspect.stitch.export import export_to_temp

    o = sh.opened
    out = export_to_temp(open_model(o.store, tokenizer=False).model, plan, o.store)
    atexit.register(shutil.rmtree, out.parent, True)
    new = _Shared(open_model(out, dtype=o.dtype, device=o.device, weights=o.weights, threads=o.threads, lazy=True))
    new.label = f"{sh.label or sh.store.name} + {plan.where}"
    return new


class Model(LensMethods):
    """A model handle: weights (lazy), engine (built on first use), optional layer plan."""

    def __init__(self, ref: Any, *, dtype: str = "float32", device: str = "cpu", plan: Any = None,
                 weights: str | None = "auto", threads: int | None = None, _shared: _Shared | None = None) -> None:
        if _shared is None:
            from lminspect.models.open import open_model

            _shared = _Shared(open_model(ref, dtype=dtype, device=device, weights=weights, threads=threads, lazy=True))
            r = str(ref)
            if os.sep not in r and "." not in r and not Path(r).exists():
                _shared.label = r.removeprefix("hf:")
        self._shared = _shared
        self._canon = list(self.store.canonical_names())
        self.plan = None
        if plan is not None:
            from lminspect.stitch import parse_plan

            self.plan = parse_plan(plan, self.n_layers)
            if getattr(self.plan, "scales_weights", False):  # mergekit's scale: a model of its own
                self._shared, self.plan = _mergekit_model(self._shared, self.plan), None

    # ---- basics
    @property
    def store(self) -> TensorStore:
        """The underlying ``TensorStore``."""
        return self._shared.store

    @property
    def name(self) -> str:
        return self._shared.label or self.store.name

    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def format(self) -> str:
        return self.store.format

    @property
    def arch(self) -> str:
        return self.store.arch

    @property
    def config(self) -> dict[str, Any]:
        return self.store.config

    @property
    def n_layers(self) -> int:
        return self.store.n_layers or 0

    @property
    def n_params(self) -> int:
        return self.store.n_params

    @property
    def tensors(self) -> Tensors:
        return Tensors(self.store)

    @property
    def layers(self) -> Layers:
        return Layers(self)

    def __getitem__(self, name: str) -> Tensor:
        return Tensor(self.store, name)

    def __contains__(self, name: object) -> bool:
        return name in self.store

    # ---- canonical-name tree for attribute navigation
    def _children(self, prefix: str) -> list[str]:
        p = prefix + "." if prefix else ""
        out: list[str] = []
        for n in self._canon:
            if n.startswith(p):
                head = n[len(p):].split(".")[0]
                if head not in ("weight", "bias") and head not in out:
                    out.append(head)
        return sorted(out, key=lambda c: (_ORDER.get(c, 50), int(c) if c.isdigit() else 0, c))

    def _child(self, prefix: str, name: str) -> Any:
        full = f"{prefix}.{name}" if prefix else name
        if full == "layers":
            return Layers(self)
        sub = self._children(full)
        if not sub:
            for leaf in (full + ".weight", full + ".bias"):
                if leaf in self._canon:
                    return Tensor(self.store, leaf)
            return None
        return Node(self, full)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or "_shared" not in self.__dict__:
            raise AttributeError(name)
        child = self._child("", name)
        if child is None:
            raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")
        return child

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._children("")))

    # ---- engine
    @property
    def engine(self) -> LM:
        """The torch model (``lminspect.models``), built on first use and shared by stitched views."""
        return self._shared.opened.model

    @property
    def tokenizer(self) -> Tokenizer:
        return self._shared.opened.tokenizer

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def _ids(self, text: str | list[int]) -> Any:
        import torch

        ids = self.encode(text) if isinstance(text, str) else [int(i) for i in text]
        if not ids:
            raise UserError("empty text: give at least one token")
        from lminspect.generate import check_ids

        check_ids(ids, self.engine.vocab_size, self.tokenizer if isinstance(text, str) else None, "text")
        return torch.tensor([ids], dtype=torch.long, device=self.engine.device)

    # ---- weights
    def stats(self, pattern: str = "*", svd: bool = True, columns: tuple[str, ...] = STAT_COLUMNS) -> Table:
        """Statistics of every tensor matching a glob (canonical names, else stored names), as a Table."""
        from lminspect.weights.naming import select_tensors

        names = select_tensors(self.store, [pattern], canonical=True)  # as `lminspect stats -t` selects
        if not names:
            raise UserError(f"{self.name}: no tensor matches {pattern!r}")
        from lminspect.weights.stats import layer_of, stat_key

        columns = tuple(stat_key(c) for c in columns)
        rows = []
        for n in names:
            st = {**self.store.stats(n, svd=svd), "name": n, "layer": layer_of(n)}
            if "alpha" in st:
                st.setdefault("alpha_warning", "")
            rows.append({c: st.get(c) for c in columns})
        return Table(rows, columns=list(columns), title=f"{self.name}: {pattern} ({len(rows)} tensors)")

    def by_layer(self, stat: str = "alpha", svd: bool = True) -> Table:
        """One statistic of every layer's weights: a row per layer, a column per component
        (``m.by_layer("alpha")`` is weightwatcher's alpha-per-layer view)."""
        from lminspect.weights.stats import by_layer, layer_warnings, stat_key

        results = self._layer_stats(svd)
        layers, cols = by_layer(results, stat)
        rows = [{"layer": i, **{c: v[k] for c, v in cols.items()}} for k, i in enumerate(layers)]
        if stat_key(stat) != "alpha":
            return Table(rows, columns=["layer", *cols], title=f"{self.name}: {stat} by layer")
        flags = layer_warnings(results)  # weightwatcher's flags beside the values, as the CLI prints them
        for row in rows:
            row["warning"] = flags.get(row["layer"], "")
        return Table(rows, columns=["layer", *cols, "warning"], title=f"{self.name}: alpha by layer")

    def plot_by_layer(self, stat: str = "alpha", svd: bool = True, width: int = 100, height: int = 25) -> Figure:
        """:meth:`by_layer` as a line plot, one line per component."""
        from lminspect.plots import by_layer_figure
        from lminspect.weights.stats import by_layer

        layers, cols = by_layer(self._layer_stats(svd), stat)
        return Figure(by_layer_figure(layers, cols, stat, width=width, height=height), title=f"{stat} by layer")

    def diff(self, other: Any, pattern: str = "*", svd: bool = True, by_layer: str | None = None) -> Table:
        """This model against ``other`` (a Model or anything ``li.open`` takes, a run dir, ``RUN@STEP``),
        tensor by tensor: rel_change, cosine, max_abs_diff, singular-subspace overlap, stat changes
        (see docs/compare.md). ``by_layer="rel_change"``: one column as a layers x components Table."""
        from lminspect.compare.checkpoints import open_ref
        from lminspect.compare.diff import DIFF_COLUMNS, diff_models
        from lminspect.weights.naming import glob_matches
        from lminspect.weights.stats import by_layer as layer_view

        b = other.store if isinstance(other, Model) else open_ref(other)
        rows, m = diff_models(self.store, b, directions=svd)
        rows = [r for r in rows if glob_matches([pattern], r["name"])]
        if not rows:
            raise UserError(f"{self.name} vs {b.name}: no shared tensor matches {pattern!r}")
        title = f"{self.name} -> {b.name}"
        if by_layer:
            layers, cols = layer_view(rows, by_layer)
            return Table([{"layer": i, **{c: v[k] for c, v in cols.items()}} for k, i in enumerate(layers)],
                         columns=["layer", *cols], title=f"{title}: {by_layer} by layer")
        only = "".join(f"; only in {s}: {len(x)}" for s, x in (("A", m.only_a), ("B", m.only_b)) if x)
        return Table(rows, columns=list(DIFF_COLUMNS), title=f"{title}: {len(rows)} tensors{only}")

    def _layer_stats(self, svd: bool) -> list[dict[str, Any]]:
        return [self.store.stats(n, svd=svd) for n in self._canon if n.startswith("layers.")]

    # ---- engine-backed methods (all honour self.plan)
    def stitch(self, plan: Any) -> Model:
        """A view of the same weights running ``plan`` (``"0-23,27-29"``, a preset, a list, a file)."""
        return Model(None, plan=plan, _shared=self._shared)

    def generate(self, prompt: Any, stream: bool = False, max_new_tokens: int = 64, **kw: Any) -> Any:
        """The continuation as text (a :class:`Completion` with ``.stats``), or the streaming iterator."""
        from lminspect.generate import generate

        gen = generate(self.engine, self.tokenizer, prompt, max_new_tokens=max_new_tokens, plan=self.plan, **kw)
        if stream:
            return gen
        out = Completion("".join(gen))
        out.stats = gen.stats
        return out

    def logits(self, text: str | list[int]) -> np.ndarray:
        """Logits ``[T, vocab]`` for a text under the plan."""
        import torch

        with torch.inference_mode():
            out = self.engine(self._ids(text), plan=self.plan)
        return out[0].float().cpu().numpy()

    def run_with_cache(self, text: str | list[int], sites: Any = None, numpy: bool = True) -> Activations:
        """``{site: activation}`` for one forward (sites ``"resid_out"``, ``"attn_probs.3"``, ...; see docs/engine.md)."""
        _, store = self.engine.run_with_cache(self._ids(text), sites, plan=self.plan)
        if numpy:
            return Activations({k: v.float().cpu().numpy()[0] for k, v in store.items()})
        return Activations({k: v for k, v in store.items()})

    def attention(self, text: str | list[int], layer: int | list[int] | None = None) -> np.ndarray:
        """Attention probabilities ``[layers, heads, T, T]`` (``layer=i``: ``[heads, T, T]``); positions are plan positions."""
        n = len(self.plan) if self.plan is not None else self.n_layers
        layers = list(range(n)) if layer is None else ([layer] if isinstance(layer, int) else list(layer))
        for i in layers:
            if not 0 <= i < n:
                raise UserError(f"layer {i} out of range (0..{n - 1})")
        from lminspect.models.sites import site_name

        acts = self.run_with_cache(text, [site_name("attn_probs", i) for i in layers])
        arr = np.stack([acts[site_name("attn_probs", i)] for i in layers])
        return arr[0] if isinstance(layer, int) else arr

    def eval_mc(self, data: Any, limit: int | None = None, mode: str = "shared",
                split: str | None = None) -> MCResult:
        """Multiple-choice accuracy (HellaSwag format: file, hub id, rows, or ``"cloze"`` for the shipped corpus).

        Under torchrun the items are split over the processes and every process gets the whole result."""
        from lminspect.evals.datasets import mc_items
        from lminspect.evals.sharded import evaluate_mc_sharded

        items = mc_items(data, limit=limit, split=split)
        return evaluate_mc_sharded(self.engine, self.tokenizer, items, plan=self.plan, mode=mode)

    def sweep(self, data: Any, plans: Any = "presets", limit: int | None = None, batch_size: int | None = None,
              separate: bool = False, out: str | os.PathLike[str] | None = None) -> Sweep:
        """Score many layer plans on one multiple-choice set, sharing their common layer calls.

        ``plans``: "presets", preset names, a plans file, or ``{name: spec}``. Returns a
        :class:`Sweep` (``.rows``, ``.results[name]``, ``.table()``, ``.summary()``).
        ``out``: a folder for ``stitch sweep``'s JSON and CSV, rewritten as each plan finishes (an
        interrupted sweep keeps its finished plans; ``evals.sweep.SweepWriter``).
        Example: ``m.sweep("cloze", {"cut": "0-23,27-29", "all": "all"}, limit=100).table()``"""
        from lminspect.evals.datasets import mc_items
        from lminspect.evals.sweep import SweepWriter, run_sweep
        from lminspect.stitch import load_plans

        items = mc_items(data, limit=limit)
        named = load_plans(plans, self.n_layers)
        writer = None if out is None else SweepWriter(out, self.name, {"model": str(self.path), "limit": limit},
                                                      n_plans=len(named))
        res = run_sweep(self.engine, self.tokenizer, items, named, batch_size=batch_size, separate=separate,
                        on_row=writer.on_row if writer else None)
        if writer is not None:
            writer.finish(res)
        return Sweep(res)

    def perplexity(self, text_or_file: Any, ctx_len: int = 512, max_tokens: int | None = None,
                   limit: int | None = None) -> PPLResult:
        """Perplexity of a text, a list of texts, a file (.txt/.jsonl/.parquet/folder), or ``hf:DATASET``."""
        from lminspect.documents import DOCUMENT_SUFFIXES, read_documents
        from lminspect.evals.perplexity import evaluate_perplexity

        src = text_or_file
        if isinstance(src, os.PathLike) or (isinstance(src, str) and "\n" not in src and len(src) < 4096
                                            and _names_a_file(src)):
            texts = read_documents(src, limit=limit)
        elif isinstance(src, str) and src.startswith("hf:"):
            texts = read_documents(src, limit=limit)
        elif isinstance(src, str) and "\n" not in src and src.lower().endswith(DOCUMENT_SUFFIXES):
            texts = read_documents(src, limit=limit)  # a missing file: one clear error
        elif isinstance(src, str):
            texts = [src]
        else:
            texts = read_documents(list(src), limit=limit)
        return evaluate_perplexity(self.engine, self.tokenizer, texts, plan=self.plan, ctx_len=ctx_len,
                                   max_tokens=max_tokens)

    # ---- display
    def __repr__(self) -> str:
        plan = ""
        if self.plan is not None:
            from lminspect.stitch import plan_to_string

            plan = f"\n  plan {plan_to_string(self.plan, self.n_layers)} ({len(self.plan)} layer calls)"
        engine = "built" if self._shared.opened.built else "not built yet"
        from lminspect.weights.provenance import model_dtype_label

        return (f"Model {self.name} ({self.arch}, {self.format}, {model_dtype_label(self.store)})\n  {self.n_layers} layers, "
                f"{self.n_params:,} parameters, {len(self.store)} tensors, {human_bytes(self.store.total_bytes)}"
                f"\n  from {self.path}{plan}\n  engine: {engine}")


def open(ref: Any, *, dtype: str = "float32", device: str = "cpu",  # noqa: A001 - li.open(path)
         weights: str | None = "auto", threads: int | None = None) -> Model:
    """Open a model lazily: a fetched name (``smollm2``), a path (.safetensors, .gguf, HF dir), ``hf:ORG/NAME``,
    or a run dir (its newest checkpoint; ``RUN@STEP``, ``RUN@first``).

    ``weights``: ``"stored"`` decodes from the file's low-bit blocks on CPU, ``"float32"`` /
    ``"bfloat16"`` are dense; ``"auto"`` picks stored when it can (docs/engine.md). ``threads``: torch
    CPU threads, by default the CLI's rule (``lminspect.runtime``: not torch's all cores on a busy machine)."""
    if isinstance(ref, Model):
        return ref
    from lminspect.compare.checkpoints import resolve_ref

    return Model(resolve_ref(ref), dtype=dtype, device=device, weights=weights, threads=threads)


def _names_a_file(text: str) -> bool:
    """Whether ``text`` is the path of something that exists (a long sentence is not: the OS
    refuses names over 255 bytes with an error, which here just means "no")."""
    try:
        return Path(text).exists()
    except OSError:
        return False
