"""The lazy TensorStore: one interface over safetensors files, HF directories and GGUF.

Opening reads headers only (plus an HF directory's config.json / GGUF metadata; the
config.json beside a single file, tokenizer.json and the chat template are read on first
use). ``store[name]`` returns a memmap view when the stored dtype is one numpy has
(F32/F16/ints) and converts per tensor otherwise (BF16 widened to float32, GGUF
quantized blocks dequantized).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from lminspect.errors import UserError
from lminspect.weights import naming

CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers >= 4.43 (and 5) and mergekit save it


@dataclass(frozen=True)
class TensorInfo:
    """What the header says about one tensor (shape in numpy order, dtype as stored)."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # the format's dtype name: "F32", "BF16", "Q4_1", ...
    nbytes: int  # bytes on disk
    canonical: str | None  # first canonical name derived from it (None if none)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class RawEntry(NamedTuple):
    """A stored tensor as the store sees it (safetensors ``Entry`` records have the same fields)."""

    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    file: Path


class TensorStore:
    """Lazy, read-only access to a model's tensors under their own and canonical names."""

    def __init__(
        self,
        *,
        path: Path | str,
        format: str,  # noqa: A002 - the contract's attribute name
        config: dict[str, Any] | Callable[[], dict[str, Any]],
        entries: dict[str, RawEntry] | Callable[[], dict[str, RawEntry]],
        loader: Callable[[str], np.ndarray],
        name: str | None = None,
        tokenizer_json: Callable[[], str | None] | str | None = None,
        chat_template: Callable[[], str | None] | str | None = None,
        arch: str | None = None,
        metadata: dict[str, Any] | None = None,
        names: Any = None,
    ) -> None:
        self._path: Any = path  # made a Path on first use (cold Path() is not free)
        self.format = format
        # config (a callable: read on first use), arch and the chat template are
        # resolved lazily so that opening a file stays a header parse
        self._config = config
        self.metadata = metadata or {}
        # entries may be a callable (built on first use); ``names`` then lists the
        # tensor names (in file order) for keys()/len() without building them
        self._entries_v = entries
        self._names = entries if names is None else names
        self._loader = loader
        self._arch = arch or None
        self.name = name or self.path.stem
        self._tok = tokenizer_json
        self._chat_template = chat_template
        self._canon_map: dict[str, naming.Canon] | None = None
        self._first: dict[str, str] | None = None

    @property
    def path(self) -> Path:
        if not isinstance(self._path, Path):
            self._path = Path(self._path)
        return self._path

    @path.setter
    def path(self, value: Path) -> None:
        self._path = value

    @property
    def config(self) -> dict[str, Any]:
        if callable(self._config):
            self._config = self._config()
        return self._config

    @config.setter
    def config(self, value: dict[str, Any]) -> None:
        self._config = value

    @property
    def arch(self) -> str:
        if self._arch is None:
            self._arch = naming.detect_arch(self.config, list(self._names))
        return self._arch

    @arch.setter
    def arch(self, value: str) -> None:
        self._arch = value

    @property
    def _entries(self) -> dict[str, RawEntry]:
        if callable(self._entries_v):
            self._entries_v = self._entries_v()
        return self._entries_v

    # canonical names are built on first use: opening stays a header parse
    @property
    def _canon(self) -> dict[str, naming.Canon]:
        if self._canon_map is None:
            shapes = {n: e.shape for n, e in self._entries.items()}
            self._canon_map = naming.build_canonical(self.arch, self.format, shapes, self.config)
        return self._canon_map

    @property
    def _first_canon(self) -> dict[str, str]:
        if self._first is None:
            self._first = {}
            for c in self._canon.values():
                self._first.setdefault(c.source, c.cname)
        return self._first

    # ------------------------------------------------------------ mapping protocol
    def keys(self) -> list[str]:
        """The format's own tensor names, in file order."""
        return list(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            naming.resolve_lookup(name, self._entries, self._canon)
        except KeyError:
            return False
        return True

    def __getitem__(self, name: str) -> np.ndarray:
        kind, key = self._resolve(name)
        if kind == "raw":
            return self._loader(key)
        return self.get_canonical(key)

    def __repr__(self) -> str:
        return f"<TensorStore {self.name} {self.format} arch={self.arch} tensors={len(self)}>"

    def _resolve(self, name: str) -> tuple[str, str]:
        try:
            return naming.resolve_lookup(name, self._entries, self._canon)
        except KeyError:
            raise UserError(f"{self.path}: no tensor named {name!r}") from None

    # ------------------------------------------------------------ info
    def info(self, name: str) -> TensorInfo:
        kind, key = self._resolve(name)
        if kind == "raw":
            e = self._entries[key]
            return TensorInfo(key, e.shape, e.dtype, e.nbytes, self._first_canon.get(key))
        c = self._canon[key]
        e = self._entries[c.source]
        return TensorInfo(c.source, c.shape, e.dtype, e.nbytes, key)

    def infos(self) -> list[TensorInfo]:
        return [self.info(n) for n in self._entries]

    def file_of(self, name: str) -> Path:
        """The file holding a tensor (for cache keys)."""
        kind, key = self._resolve(name)
        src = key if kind == "raw" else self._canon[key].source
        return self._entries[src].file

    @property
    def total_bytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    @property
    def n_params(self) -> int:
        return sum(int(np.prod(e.shape, dtype=np.int64)) for e in self._entries.values())

    # ------------------------------------------------------------ shape facts
    # One owner for the model's sizes: the CLI, the TUI, the REPL and activations all ask here.
    @property
    def n_layers(self) -> int | None:
        """Decoder blocks: the config's count, else the canonical ``layers.N`` names; None if neither says."""
        n = naming.n_layers(self.config)
        if n:
            return n
        idx = {int(c.split(".")[1]) for c in self._canon if c.startswith("layers.")}
        return max(idx) + 1 if idx else None

    @property
    def n_heads(self) -> int | None:
        """Attention (query) heads per layer, from the config."""
        return naming.n_heads(self.config)

    @property
    def n_kv_heads(self) -> int | None:
        """Key/value heads per layer (grouped-query / multi-query attention), from the config."""
        return naming.n_kv_heads(self.config)

    @property
    def hidden_size(self) -> int | None:
        return naming.hidden_size(self.config)

    @property
    def head_dim(self) -> int | None:
        return naming.head_dim(self.config)

    # ------------------------------------------------------------ canonical view
    def canonical_names(self) -> list[str]:
        return list(self._canon)

    def canonical_source(self, cname: str) -> str:
        """The stored tensor a canonical tensor comes from."""
        return self._canon[self._resolve(cname)[1]].source

    def canonical_transform(self, cname: str) -> Callable[[np.ndarray], np.ndarray] | None:
        """The reshaping (transpose, split, RoPE un-permutation) that turns the stored tensor into
        the canonical one; it moves whole elements/rows, so it applies to raw bits or GGUF blocks."""
        return self._canon[self._resolve(cname)[1]].transform

    def get_canonical(self, cname: str) -> np.ndarray:
        """A canonical tensor as float32 numpy in ``nn.Linear`` orientation ``[out, in]``."""
        kind, key = self._resolve(cname)
        if kind != "canon":
            if key in self._first_canon:
                key = self._first_canon[key]
            else:
                raise UserError(f"{self.path}: {cname!r} has no canonical name")
        c = self._canon[key]
        a = self._loader(c.source)
        if c.transform is not None:
            a = c.transform(a)
        return np.ascontiguousarray(a, dtype=np.float32)

    def heads(self, cname: str) -> np.ndarray:
        """Per-head view of an attention projection.

        q/k/v weights -> ``[n_heads, head_dim, in]`` (k/v use the KV head count);
        o weight -> ``[n_heads, out, head_dim]`` (the columns each head writes through).
        """
        key = self._resolve(cname)[1]
        if key not in self._canon:
            key = self._first_canon.get(key, key)
        w = self.get_canonical(key)
        part = key.split(".")
        if len(part) < 5 or part[2] != "attn":
            raise UserError(f"{self.path}: {cname!r} is not an attention projection")
        hd = self.head_dim
        if not hd:
            raise UserError(f"{self.path}: config has no head count; cannot split {cname!r} into heads")
        if part[3] == "o":
            return w.reshape(w.shape[0], -1, hd).transpose(1, 0, 2)
        if w.ndim == 1:
            return w.reshape(-1, hd)
        return w.reshape(-1, hd, w.shape[1])

    def tree(self) -> dict[str, Any]:
        """Canonical names grouped: embeddings / layers[N][attn|mlp|norms] / norms / head / other."""
        return naming.build_tree(list(self._entries), self._canon)

    # ------------------------------------------------------------ tokenizer & stats
    def tokenizer_json(self) -> str | None:
        """tokenizer.json text (built from metadata for GGUF), or None if the model has none."""
        if callable(self._tok):
            self._tok = self._tok()
        return self._tok

    @property
    def chat_template(self) -> str | None:
        if callable(self._chat_template):
            self._chat_template = self._chat_template()
        return self._chat_template

    def stats(self, name: str, *, svd: bool = True, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Statistics of one tensor (cached on disk, keyed by file identity); see stats.py.
        ``progress(stage)`` hears each stage of a computation."""
        from lminspect.weights.stats import tensor_stats

        return tensor_stats(self, name, svd=svd, progress=progress)


# ---------------------------------------------------------------- openers
