"""The lazy TensorStore: one interface over safetensors files, HF directories and GGUF.

Opening reads headers only (plus config.json / GGUF metadata). ``store[name]`` returns
a memmap view when the stored dtype is one numpy has (F32/F16/ints) and converts per
tensor otherwise (BF16 widened to float32, GGUF quantized blocks dequantized).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lminspect.errors import FormatError, UserError
from lminspect.weights import naming
from lminspect.weights.safetensors_format import SafetensorsFile


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


@dataclass(frozen=True)
class RawEntry:
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    file: Path


class TensorStore:
    """Lazy, read-only access to a model's tensors under their own and canonical names."""

    def __init__(
        self,
        *,
        path: Path,
        format: str,  # noqa: A002 - the contract's attribute name
        config: dict[str, Any],
        entries: dict[str, RawEntry],
        loader: Callable[[str], np.ndarray],
        name: str | None = None,
        tokenizer_json: Callable[[], str | None] | str | None = None,
        chat_template: str | None = None,
        arch: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.format = format
        self.config = config
        self.metadata = metadata or {}
        self._entries = entries
        self._loader = loader
        self.arch = arch or naming.detect_arch(config, list(entries))
        self.name = name or self.path.stem
        self._tok = tokenizer_json
        self._chat_template = chat_template
        self._canon_map: dict[str, naming.Canon] | None = None
        self._first: dict[str, str] | None = None

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
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

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

    # ------------------------------------------------------------ canonical view
    def canonical_names(self) -> list[str]:
        return list(self._canon)

    def canonical_source(self, cname: str) -> str:
        """The stored tensor a canonical tensor comes from."""
        return self._canon[self._resolve(cname)[1]].source

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
        hd = naming.head_dim(self.config)
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
        return self._chat_template

    def stats(self, name: str, *, svd: bool = True) -> dict[str, Any]:
        """Statistics of one tensor (cached on disk, keyed by file identity); see stats.py."""
        from lminspect.weights.stats import tensor_stats

        return tensor_stats(self, name, svd=svd)


# ---------------------------------------------------------------- openers


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{path}: cannot read JSON: {e}") from None
    if not isinstance(data, dict):
        raise FormatError(f"{path}: not a JSON object")
    return data


def _from_safetensors_files(
    path: Path, files: list[Path], config: dict[str, Any], fmt: str, name: str,
    weight_map: dict[str, str] | None = None,
) -> TensorStore:
    opened = {f: SafetensorsFile(f) for f in files}
    entries: dict[str, RawEntry] = {}
    owner: dict[str, SafetensorsFile] = {}
    for f, sf in opened.items():
        for n, e in sf.entries.items():
            if n in entries:
                raise FormatError(f"{f}: tensor {n!r} also appears in {entries[n].file.name}")
            entries[n] = RawEntry(e.dtype, e.shape, e.nbytes, f)
            owner[n] = sf
    if weight_map is not None:
        missing = [n for n in weight_map if n not in entries]
        if missing:
            raise FormatError(f"{path}: index lists {missing[0]!r} but no shard holds it")

    def loader(n: str) -> np.ndarray:
        return owner[n].get(n)

    tok = None
    tok_path = path / "tokenizer.json" if path.is_dir() else path.parent / "tokenizer.json"
    chat = None
    if tok_path.is_file():
        tok = tok_path.read_text(encoding="utf-8")
        tc = tok_path.parent / "tokenizer_config.json"
        if tc.is_file():
            try:
                chat = json.loads(tc.read_text(encoding="utf-8")).get("chat_template")
            except (OSError, json.JSONDecodeError):
                chat = None
            if chat is not None and not isinstance(chat, str):
                chat = None
    meta = {}
    if len(opened) == 1:
        meta = next(iter(opened.values())).metadata
    return TensorStore(
        path=path, format=fmt, config=config, entries=entries, loader=loader, name=name,
        tokenizer_json=tok, chat_template=chat, metadata=meta,
    )


def open_hf_dir(path: Path) -> TensorStore:
    """A HF model directory: config.json + model.safetensors or a sharded index."""
    cfg_path = path / "config.json"
    config = _read_json(cfg_path) if cfg_path.is_file() else {}
    index = path / "model.safetensors.index.json"
    weight_map = None
    if index.is_file():
        idx = _read_json(index)
        weight_map = idx.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise FormatError(f"{index}: no weight_map")
        shards = []
        for shard in dict.fromkeys(weight_map.values()):
            p = path / str(shard)
            if not p.is_file() or Path(shard).name != shard:
                raise FormatError(f"{index}: shard {shard!r} is missing")
            shards.append(p)
        files = shards
    elif (path / "model.safetensors").is_file():
        files = [path / "model.safetensors"]
    else:
        files = sorted(path.glob("*.safetensors"))
    if not files:
        extra = ""
        if list(path.glob("*.bin")) or list(path.glob("*.pt")):
            extra = " (pickled .bin/.pt weights are not loaded: unpickling is unsafe)"
        raise FormatError(f"{path}: no weights found: no model.safetensors, index or *.safetensors{extra}")
    return _from_safetensors_files(path, files, config, "hf-dir", path.name, weight_map)


def open_store(ref: str | os.PathLike[str], **kw: Any) -> TensorStore:
    """Open a model lazily: ``.safetensors``, HF dir, ``.gguf``, a fetched name, or ``hf:ORG/NAME``."""
    if isinstance(ref, TensorStore):
        return ref
    s = os.fspath(ref)
    if s.startswith("hf:"):
        from lminspect.weights.fetch import fetch

        return open_hf_dir(fetch(s).hf_dir)
    p = Path(s).expanduser()
    if p.is_dir():
        return open_hf_dir(p)
    if p.is_file():
        with open(p, "rb") as f:
            magic = f.read(4)
        if magic == b"GGUF" or p.suffix.lower() == ".gguf":
            from lminspect.weights.gguf_format import open_gguf

            return open_gguf(p)
        cfg_path = p.parent / "config.json"
        config = {}
        if cfg_path.is_file():
            try:
                config = _read_json(cfg_path)
            except FormatError:
                config = {}
        return _from_safetensors_files(p, [p], config, "safetensors", p.stem)
    if os.sep not in s and "." not in s:
        from lminspect.weights.fetch import resolve_fetched

        fetched = resolve_fetched(s)
        if fetched is not None:
            prefer = kw.get("prefer", "hf")
            if prefer == "gguf" or not (fetched.hf_dir / "config.json").is_file():
                return open_store(fetched.gguf_path)
            return open_hf_dir(fetched.hf_dir)
    raise UserError(f"{s}: no such file or directory")
