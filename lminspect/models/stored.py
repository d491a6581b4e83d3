"""The decode path on weights as stored: ``--weights stored|float32|bfloat16`` (default auto).

Decoding one token multiplies every weight matrix by one vector, so its speed is the speed of
reading the weights. ``attach_stored(model, store)`` gives each linear layer of a float32
model its stored low-bit form (GGUF Q8_0/Q4_0/Q4_1 blocks or bfloat16 bits, see packed.py)
next to the dense weight; a ``StoredLinear`` then multiplies a single float32 CPU vector with
the packed form and leaves everything else (prefill, batches, training, CUDA, other dtypes)
to the dense weight. So plans, per-occurrence scales, hooks and ``run_with_cache`` work as
before: they act on activations, never on the packed weights. A dense weight changed in
place (training, an edit) retires its packed copy for good.

Where the stored form comes from: a GGUF's own tensors; a fetched model's HF directory (the
float32 conversion of a GGUF, whose safetensors metadata names the source file beside it) is
served from that GGUF, the same numbers; bfloat16 safetensors keep their bits. float32 or
float16 sources have no smaller exact form: ``stored`` then means the dense float32 path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lminspect.errors import UserError
from lminspect.models.packed import PackedWeight, kernels

WEIGHTS = ("auto", "stored", "float32", "bfloat16")
_LINEARS = ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down")


class StoredLinear(nn.Linear):
    """An ``nn.Linear`` (the same weight and bias Parameters, the same state_dict) that multiplies
    one float32 CPU vector by its ``PackedWeight`` and everything else by the dense weight."""

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None, packed: PackedWeight) -> None:
        nn.Module.__init__(self)
        self.out_features, self.in_features = weight.shape
        self.weight = weight
        self.bias = bias
        self.packed: PackedWeight | None = packed
        self._dense_key = (weight.data_ptr(), weight._version)  # retire packed when this changes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.packed
        if (p is not None and x.numel() == self.in_features and x.dtype == torch.float32
                and x.device.type == "cpu" and not torch.is_grad_enabled()):
            if (self.weight.data_ptr(), self.weight._version) == self._dense_key:
                y = p.matvec(x.reshape(-1))
                if self.bias is not None:
                    y = y + self.bias
                return y.view(*x.shape[:-1], self.out_features)
            self.packed = None  # the dense weight was edited: the packed copy no longer matches
        return F.linear(x, self.weight, self.bias)


# --------------------------------------------------------------------------- finding the stored form


class _Source:
    """Raw stored tensors of a model: ``raw(cname)`` -> (kind, array) or None."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.gguf = _gguf_of(store)
        self._st_files: dict[Path, Any] = {}

    def raw(self, cname: str) -> tuple[str, np.ndarray] | None:
        store = self.store
        if self.gguf is not None:
            src = store.canonical_source(cname) if store.format == "gguf" else _gguf_name(cname)
            if src is None or src not in self.gguf.tensors:
                return None
            kind = self.gguf.tensors[src][0]
            if kind not in ("Q8_0", "Q4_0", "Q4_1"):
                return None
            arr = self.gguf.raw(src)
            transform = _gguf_transform(store, cname) if store.format != "gguf" else store.canonical_transform(cname)
        else:
            src = store.canonical_source(cname)
            if store.info(src).dtype != "BF16":
                return None
            from lminspect.weights.safetensors_format import SafetensorsFile

            path = store.file_of(src)
            sf = self._st_files.get(path) or self._st_files.setdefault(path, SafetensorsFile(path))
            kind, arr, transform = "BF16", sf.raw(src), store.canonical_transform(cname)
        if transform is not None:
            arr = transform(arr)
        return kind, arr


def _gguf_of(store: Any) -> Any:
    """The parsed GGUF whose blocks this store's tensors are: its own, or the file a float32
    HF directory was converted from (``lminspect fetch`` / ``convert`` record its name)."""
    if store.format == "gguf":
        return getattr(store, "gguf", None)
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


# --------------------------------------------------------------------------- attaching


def attach_stored(model: Any, store: Any) -> list[str]:
    """Give ``model``'s linear layers (and a tied head) their stored low-bit form from ``store``.

    Returns the kinds attached (e.g. ``["Q4_1", "Q8_0"]``; empty when the store has no such
    form) and sets ``model.weights_label`` for the stats line. The model must be float32."""
    if model.dtype != torch.float32:
        raise UserError(f"--weights stored needs a float32 model, not {model.dtype}")
    source = _Source(store)
    kinds: set[str] = set()

    def packed_for(cname: str, weight: torch.Tensor) -> PackedWeight | None:
        got = source.raw(cname)
        if got is None:
            return None
        kind, arr = got
        p = (PackedWeight.from_bf16(arr) if kind == "BF16"
             else PackedWeight.from_gguf_blocks(kind, arr, weight.shape[1]))
        if (p.out_features, p.in_features) != tuple(weight.shape):
            return None
        kinds.add(kind)
        return p

    for i, block in enumerate(model.layers):
        for path in _LINEARS:
            owner_name, attr = path.split(".")
            owner = getattr(block, owner_name)
            lin = getattr(owner, attr, None)
            if isinstance(lin, nn.Linear) and not isinstance(lin, StoredLinear):
                p = packed_for(f"layers.{i}.{path}.weight", lin.weight)
                if p is not None:
                    setattr(owner, attr, StoredLinear(lin.weight, lin.bias, p))
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        p = packed_for("head.weight", head.weight)
        if p is not None:
            model.head = StoredLinear(head.weight, head.bias, p)
    elif head is None:
        w = model.embed.tokens.weight
        p = packed_for("embed.tokens.weight", w)
        if p is not None:
            model.__dict__["_tied_head"] = StoredLinear(w, None, p)  # not a submodule: no state_dict entry
    model.weights_label = f"stored {'+'.join(sorted(kinds))}" if kinds else "float32 (no low-bit form stored)"
    return sorted(kinds)


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


__all__ = ["WEIGHTS", "StoredLinear", "attach_stored", "resolve_weights"]
