"""Weights used in the form they are stored in: ``--weights stored|float32|bfloat16`` (default auto).

``stored`` (what ``auto`` picks on CPU) builds a float32-activation model whose large matrices stay
in the file: each linear layer is a ``StoredLinear`` and the token embedding a ``StoredEmbedding``
holding a ``PackedWeight`` (packed.py) over the memory-mapped file: bfloat16 / float16 bits and
GGUF blocks (Q4_K, Q5_K, Q6_K, Q8_0, Q4_0, Q4_1, ... whatever a Q4_K_M file mixes in) are never
copied into a dense float32 model. What each forward does with them:

- one float32 CPU vector with grad off (a decode step): the packed kernels (``matvec``);
- anything else (prefill, batches, training, hooks that need grads): exact float32 rows
  dequantized a chunk at a time (``PackedWeight.dense``, at most 64 MB), then ``F.linear``:
  the same numbers as the dense float32 model, bit for bit;
- a token embedding gathers and dequantizes only the rows of the tokens it sees.

``.weight`` still works: reading it makes that one tensor a real float32 Parameter (and the
module then uses it), so edits (``lin.weight.mul_(2)``, assigning a new Parameter, training a
touched tensor) act as on a dense model and cost only the tensors touched. ``state_dict()``
dequantizes each tensor as it is asked for (for export), without keeping it.

float32 tensors are used in place too (a copy-on-write view of the map); a GGUF's rotary
q/k rows stay in the file's order and the output is permuted instead. The stored form comes
from a GGUF's own tensors, a safetensors file's, or, for the float32 HF directory ``lminspect
fetch`` converts, the GGUF beside it (its safetensors metadata names it): the same numbers.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lminspect.errors import UserError
from lminspect.models import packed as pk
from lminspect.models.packcache import PackCache
from lminspect.models.packed import TILED, PackedWeight, kernels, scratch

WEIGHTS = ("auto", "stored", "float32", "bfloat16")
_UNSET = object()
TILE_MAX = 1 << 26  # Q8_0/Q4_0/Q4_1 matrices up to this many values get the float tiles (a copy)


# rows up to this many values: Q8_0/Q4_0/Q4_1 tiles even with the integer kernels (measured on
# AVX2, one thread: 576-value rows ran 1.4-1.7x faster as tiles, whose per-row cost is nil, while
# 4096-value rows ran 1.65x faster on the integer kernels); wider models keep the file's rows
TILE_IN_MAX = 1024


def tiles_wanted(in_features: int) -> bool:
    """Whether a Q8_0/Q4_0/Q4_1 linear layer is re-laid out in tiles (a copy of about its stored
    size): for float32-activation decoding (``EXACT_DECODE``, or no integer kernels), or narrow
    rows; otherwise the integer kernels read the file's rows."""
    return in_features <= TILE_IN_MAX or pk.EXACT_DECODE or pk.int_kernels() is None


class StoredLinear(nn.Linear):
    """An ``nn.Linear`` whose weight stays in its stored form (see the module doc).

    ``perm``: canonical row i is the packed weight's row ``perm[i]`` (GGUF rotary q/k)."""

    def __init__(self, packed: PackedWeight, bias: nn.Parameter | None, perm: np.ndarray | None = None,
                 tied: nn.Module | None = None) -> None:
        nn.Module.__init__(self)
        self.in_features = packed.in_features
        self.out_features = packed.out_features if perm is None else len(perm)
        self.packed = packed
        self._parameters["weight"] = None  # made on first use of .weight (keeps state_dict order)
        self.register_parameter("bias", bias)
        self.__dict__["_perm"] = perm
        self.__dict__["_tied"] = tied  # a tied head reads the embedding's weight (not a submodule)

    def __getattr__(self, name: str) -> Any:
        if name == "weight":
            return self.materialize()
        return super().__getattr__(name)

    def _dense_now(self) -> torch.Tensor | None:
        tied = self.__dict__["_tied"]
        if tied is not None:
            return tied._parameters["weight"]
        return self._parameters["weight"]

    def materialize(self) -> nn.Parameter:
        """This weight as a float32 Parameter, made once; forwards use it from then on."""
        tied = self.__dict__["_tied"]
        if tied is not None:
            return tied.weight
        p = self._parameters["weight"]
        if p is None:
            p = self._parameters["weight"] = nn.Parameter(self.packed.dense(self.__dict__["_perm"]))
        return p

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        # the weight is dequantized for whoever asked (export), not kept
        for key, p in self._parameters.items():
            if p is None and key == "weight":
                p = self.packed.dense(self.__dict__["_perm"])
            if p is not None:
                destination[prefix + key] = p if keep_vars else p.detach()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        if prefix + "weight" in state_dict and self._parameters["weight"] is None:
            self.materialize()
        nn.Module._load_from_state_dict(self, state_dict, prefix, *args)

    @property
    def kernel_ready(self) -> bool:
        """Whether decode steps still read the packed form (no float32 copy made)."""
        return self._dense_now() is None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._dense_now()
        if w is not None:
            return F.linear(x, w, self.bias)
        perm = self.__dict__["_perm"]
        if (x.numel() == self.in_features and x.dtype == torch.float32 and x.device.type == "cpu"
                and not torch.is_grad_enabled()):
            y = self.packed.matvec(x.reshape(-1))
            if perm is not None:
                y = y[torch.from_numpy(perm)]
            if self.bias is not None:
                y = y + self.bias
            return y.view(*x.shape[:-1], self.out_features)
        return self._dense_forward(x, perm)

    def _dense_forward(self, x: torch.Tensor, perm: np.ndarray | None, with_bias: bool = True) -> torch.Tensor:
        """F.linear on exact float32 rows made a chunk at a time (all at once when they fit)."""
        p = self.packed
        bias = self.bias if with_bias else None
        reuse = not (torch.is_grad_enabled() and x.requires_grad)  # autograd keeps w: no shared buffer
        n_in, n_out = self.in_features, self.out_features
        step = n_out if p.tiled else p.chunk_rows()
        if step >= n_out:
            w = p.dense(perm, out=scratch(n_out * n_in) if reuse else None)
            return F.linear(x, w, bias)
        y = x.new_empty(*x.shape[:-1], n_out)
        for r0 in range(0, n_out, step):
            r1 = min(n_out, r0 + step)
            rows = slice(r0, r1) if perm is None else perm[r0:r1]
            w = p.dense(rows, out=scratch((r1 - r0) * n_in) if reuse else None)
            b = None if bias is None else bias[r0:r1]
            y[..., r0:r1] = F.linear(x, w, b)
        return y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, stored={self.packed.kind}"


class StoredEmbedding(nn.Embedding):
    """An ``nn.Embedding`` over a stored matrix: a forward dequantizes only the rows it looks up."""

    def __init__(self, packed: PackedWeight) -> None:
        nn.Module.__init__(self)
        self.num_embeddings, self.embedding_dim = packed.out_features, packed.in_features
        self.padding_idx, self.max_norm, self.norm_type = None, None, 2.0
        self.scale_grad_by_freq, self.sparse = False, False
        self.packed = packed
        self._parameters["weight"] = None
        self.__dict__["like"] = torch.empty(0)  # dtype / device of what forward returns
        self.__dict__["_perm"] = None

    def __getattr__(self, name: str) -> Any:
        if name == "weight":
            return self.materialize()
        return super().__getattr__(name)

    def materialize(self) -> nn.Parameter:
        p = self._parameters["weight"]
        if p is None:
            p = self._parameters["weight"] = nn.Parameter(self.packed.dense())
        return p

    _save_to_state_dict = StoredLinear._save_to_state_dict
    _load_from_state_dict = StoredLinear._load_from_state_dict

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        w = self._parameters["weight"]
        if w is not None:
            return F.embedding(ids, w)
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_embeddings):
            raise IndexError("index out of range in self")
        uniq, inv = torch.unique(ids.reshape(-1), return_inverse=True)
        rows = self.packed.dense(uniq.numpy())
        return rows[inv].view(*ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, stored={self.packed.kind}"


def weight_rows(mod: nn.Module, rows: Any) -> torch.Tensor:
    """Rows (indices) of a linear layer's or embedding's weight; a stored weight is
    dequantized for those rows only, never made a float32 Parameter (the lens's unembedding)."""
    idx = np.atleast_1d(np.asarray(rows, dtype=np.int64))
    if isinstance(mod, StoredLinear) and mod.kernel_ready or (
            isinstance(mod, StoredEmbedding) and mod._parameters["weight"] is None):
        perm = mod.__dict__["_perm"]
        return mod.packed.dense(idx if perm is None else perm[idx])
    return mod.weight[torch.from_numpy(idx)]


def linear_no_bias(mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x @ mod.weight.T`` without the bias; a stored weight is read a chunk at a time, not
    materialized (DLA's per-head outputs through ``attn.o``)."""
    if isinstance(mod, StoredLinear) and mod.kernel_ready:
        return mod._dense_forward(x, mod.__dict__["_perm"], with_bias=False)
    return F.linear(x, mod.weight)


# --------------------------------------------------------------------------- finding the stored form


class _Source:
    """Raw stored tensors of a model: ``raw(cname)`` -> (kind, array, transform) or None."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.gguf = _gguf_of(store)
        self._st_files: dict[Path, Any] = {}

    def kind(self, cname: str) -> str | None:
        """The stored dtype of a canonical tensor ("F32", "BF16", "Q4_K", ...), None if unknown."""
        store = self.store
        try:
            if self.gguf is not None and store.format != "gguf":
                src = _gguf_name(cname)
                if src is not None and src in self.gguf.tensors:
                    return self.gguf.tensors[src][0]
            return store.info(store.canonical_source(cname)).dtype
        except (KeyError, LookupError, UserError, AttributeError):
            return None

    def raw(self, cname: str) -> tuple[str, np.ndarray, Any] | None:
        store = self.store
        try:
            if self.gguf is not None:
                src = store.canonical_source(cname) if store.format == "gguf" else _gguf_name(cname)
                if src is None or src not in self.gguf.tensors:
                    return None
                kind = self.gguf.tensors[src][0]
                transform = (_gguf_transform(store, cname) if store.format != "gguf"
                             else store.canonical_transform(cname))
                return kind, self.gguf.raw(src), transform
            src = store.canonical_source(cname)
            path = Path(store.file_of(src))
            if path.suffix != ".safetensors":
                return None
            from lminspect.weights.safetensors_format import SafetensorsFile

            sf = (getattr(store, "st_files", {}).get(path) or self._st_files.get(path)
                  or self._st_files.setdefault(path, SafetensorsFile(path)))
            return store.info(src).dtype, sf.raw(src), store.canonical_transform(cname)
        except (KeyError, LookupError, UserError, AttributeError, OSError):
            return None


def row_map(transform: Any, rows: int) -> np.ndarray | None | bool:
    """The stored rows a transform picks, as indices (None: all rows in order); False when it
    is not a pure row selection (a transpose: the data must move)."""
    if transform is None:
        return None
    try:
        got = transform(np.arange(rows, dtype=np.int64)[:, None])
    except (ValueError, TypeError, IndexError):
        return False
    if got.ndim != 2 or got.shape[1] != 1:
        return False
    idx = np.ascontiguousarray(got[:, 0])
    return None if len(idx) == rows and np.array_equal(idx, np.arange(rows)) else idx

def _gguf_of(store: Any) -> Any:
    """The parsed GGUF whose blocks this store's tensors are: its own, or the file a float32
    HF directory was converted from (``lminspect fetch`` / ``convert`` record its name), parsed
    once per store (the memory check and the load both ask)."""
    if store.format == "gguf":
        return getattr(store, "gguf", None)
    cached = getattr(store, "__dict__", {}).get("source_gguf", _UNSET)
    if cached is _UNSET:
        cached = _source_gguf(store)
        with contextlib.suppress(AttributeError):
            store.source_gguf = cached
    return cached


def _source_gguf(store: Any) -> Any:
    source = str((store.metadata or {}).get("source", ""))
    if not source.endswith(".gguf") or Path(source).name != source:
        return None
    root = Path(store.path)
    for cand in (root.parent / source, root / source):
        if cand.is_file():
            break
    else:
        return None
    try:
        if store.info(store.canonical_source("embed.tokens.weight")).dtype != "F32":
            return None  # converted to bf16/f16: rounded, no longer the GGUF's numbers
    except (KeyError, LookupError, UserError):
        return None
    from lminspect.weights import open_store

    g = open_store(cand)
    return g.gguf if g.arch == "llama" and store.arch == "llama" else None


_GGUF_NAMES = {"attn.q": "attn_q", "attn.k": "attn_k", "attn.v": "attn_v", "attn.o": "attn_output",
               "mlp.gate": "ffn_gate", "mlp.up": "ffn_up", "mlp.down": "ffn_down"}


def _gguf_name(cname: str) -> str | None:
    """GGUF llama tensor name of a canonical weight name."""
    if cname == "embed.tokens.weight":
        return "token_embd.weight"
    if cname == "head.weight":
        return "output.weight"
    parts = cname.split(".")
    key = ".".join(parts[2:4])
    if parts[0] != "layers" or key not in _GGUF_NAMES:
        return None
    return f"blk.{parts[1]}.{_GGUF_NAMES[key]}.weight"


def _gguf_transform(store: Any, cname: str) -> Any:
    """The row un-permutation GGUF llama q/k need (as for the store's own GGUF)."""
    from lminspect.weights.naming import n_heads, n_kv_heads, unpermute_rope

    if cname.endswith("attn.q.weight"):
        return lambda a: unpermute_rope(a, n_heads(store.config))
    if cname.endswith("attn.k.weight"):
        return lambda a: unpermute_rope(a, n_kv_heads(store.config))
    return None


def _packed(source: _Source, cname: str, shape: tuple[int, ...], tiles: bool, packs: PackCache | None = None
            ) -> tuple[PackedWeight, np.ndarray | None] | None:
    """The stored form of a canonical ``[out, in]`` matrix with its row permutation, or None
    when it has none worth keeping (float32: used in place as a dense Parameter instead)."""
    got = source.raw(cname)
    if got is None or len(shape) != 2:
        return None
    kind, arr, transform = got
    if kind in ("F32", "F64") or arr.ndim != 2:
        return None
    idx = row_map(transform, arr.shape[0])
    if idx is False:
        return None
    if idx is not None and len(idx) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
        arr, idx = arr[int(idx[0]):int(idx[0]) + len(idx)], None  # a contiguous slice: a view
    rows = arr.shape[0] if idx is None else len(idx)
    if kind == "BF16":
        p = PackedWeight.from_bf16(arr)
    elif kind == "F16":
        p = PackedWeight.from_f16(arr)
    elif arr.dtype == np.uint8:
        tiles = tiles and shape[0] * shape[1] <= TILE_MAX and tiles_wanted(shape[1])
        p = (packs.pack(kind, arr, shape[1], tiles) if packs is not None
             else PackedWeight.from_gguf_blocks(kind, arr, shape[1], tiles=tiles))
    else:
        return None
    if (rows, p.in_features) != tuple(shape):
        return None
    return p, idx


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def attach_stored(model: Any, store: Any) -> tuple[set[str], list[str]]:
    """Make ``model``'s (meta-device) linear layers and token embedding hold ``store``'s stored form.

    Returns the parameter names now held in stored form (the caller loads the rest) and the
    kinds attached (e.g. ``["Q4_K", "Q6_K"]``); sets ``model.weights_label`` for the stats line."""
    source = _Source(store)
    packs = PackCache(source.gguf)  # the tiles of the last load, when the GGUF has not changed since
    taken: set[str] = set()
    kinds: set[str] = set()
    for name, mod in list(model.named_modules()):
        if type(mod) is nn.Linear:
            cname = f"{name}.weight"
            got = _packed(source, cname, tuple(mod.weight.shape), tiles=True, packs=packs)
            if got is not None:
                _swap(model, name, StoredLinear(got[0], mod.bias, got[1]))
                taken.add(cname)
                kinds.add(got[0].kind)
    emb = model.embed.tokens
    got = _packed(source, "embed.tokens.weight", tuple(emb.weight.shape), tiles=False)
    if got is not None and got[1] is None:
        emb = model.embed.tokens = StoredEmbedding(got[0])
        taken.add("embed.tokens.weight")
        kinds.add(got[0].kind)
        if getattr(model, "head", None) is None:  # tied: the head multiplies by the same matrix
            head = _packed(source, "embed.tokens.weight", (emb.num_embeddings, emb.embedding_dim), tiles=True,
                           packs=packs)
            model.__dict__["_tied_head"] = StoredLinear(head[0] if head else got[0], None, tied=emb)
    model.weights_label = f"stored {'+'.join(sorted(kinds))}" if kinds else "float32 (no low-bit form stored)"
    packs.save()
    return taken, sorted(kinds)


def _in_place(store: Any, pname: str, kinds: tuple[str, ...]) -> bool:
    """Whether a canonical tensor is stored as one of ``kinds`` with no data-moving transform."""
    try:
        kind = store.info(pname).dtype
        transform = store.canonical_transform(pname)
        rows = store.info(store.canonical_source(pname)).shape[:1] or (1,)
    except (KeyError, LookupError, UserError, AttributeError):
        return False
    return kind in kinds and (transform is None or row_map(transform, rows[0]) is None)


def load_estimate(model: Any, store: Any, stored: bool, itemsize: int) -> tuple[int, int]:
    """(bytes of copies loading makes, bytes of per-layer working buffers) for a meta-device
    ``model``: tensors used in place from the memory map cost nothing of their own (the file's
    pages are shared and evictable); others are converted to ``itemsize`` bytes per value."""
    source = _Source(store)
    lazy = {f"{n}.weight" for n, m in model.named_modules() if type(m) is nn.Linear} | {"embed.tokens.weight"}
    same = {4: ("F32",), 2: ("BF16", "F16")}.get(4 if stored else itemsize, ())
    copies = working = 0
    for pname, p in model.state_dict().items():
        n = p.numel()
        kind = source.kind(pname) if stored and pname in lazy else None
        if kind is not None and kind not in ("F32", "F64"):
            if (kind in TILED and pname != "embed.tokens.weight" and n <= TILE_MAX
                    and tiles_wanted(p.shape[-1])):
                copies += n * 9 // 8  # the tiles: a byte per value at most, plus float32 scales
                working = max(working, 4 * n)  # their dense form is made whole
            else:
                working = max(working, 4 * min(n, pk.CHUNK_ELEMENTS))
        elif not _in_place(store, pname, same):
            copies += n * (4 if stored else itemsize)
    return copies, 2 * working  # the dense rows and the matmul's output beside them


def in_place_tensor(store: Any, pname: str, tdtype: Any) -> Any:
    """A bfloat16 / float16 tensor viewing the file's bits when the store holds ``pname`` in that
    dtype (no float32 round trip); None otherwise."""
    want = {torch.bfloat16: "BF16", torch.float16: "F16"}.get(tdtype)
    if want is None or not hasattr(store, "info"):
        return None
    try:
        if store.info(pname).dtype != want:
            return None
    except (KeyError, LookupError, UserError):
        return None
    src = _Source.__new__(_Source)  # the file's own tensors (not a converted dir's GGUF)
    src.store, src.gguf, src._st_files = store, getattr(store, "gguf", None), {}
    got = src.raw(pname)
    if got is None or got[1].dtype.itemsize != 2:
        return None
    _, arr, transform = got
    idx = row_map(transform, arr.shape[0])
    if idx is False:
        arr = transform(arr)
    elif idx is not None:
        arr = arr[idx]
    arr = arr.view(np.ndarray) if isinstance(arr, np.memmap) else arr
    return torch.from_numpy(arr.view(np.int16)).view(tdtype)


def resolve_weights(weights: str | None, dtype: str = "float32", device: str = "cpu") -> str:
    """The concrete choice for ``--weights``: stored, float32, bfloat16 or float16.

    ``auto`` is ``stored`` on CPU when the compiled kernels are available and ``--dtype`` is
    float32 (measured: stored Q4_1 decodes ~2-3x faster than float32, see docs/engine.md),
    else ``--dtype``. Without numba the torch version of the kernels is slower than float32."""
    w = (weights or "auto").lower()
    if w not in WEIGHTS:
        raise UserError(f"--weights {weights!r}: choose one of {', '.join(WEIGHTS)}")
    if w == "auto":
        on_cpu = str(device).startswith("cpu")
        return "stored" if on_cpu and dtype in ("float32", "fp32") and kernels() is not None else dtype
    if w == "stored" and not str(device).startswith("cpu"):
        raise UserError(f"--weights stored is a CPU path; on {device} use float32 or bfloat16")
    return w


__all__ = ["WEIGHTS", "StoredEmbedding", "StoredLinear", "attach_stored", "in_place_tensor", "linear_no_bias",
           "load_estimate", "resolve_weights", "weight_rows"]
