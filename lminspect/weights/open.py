"""Opening a model: any reference (file, HF directory, GGUF, fetched name, ``hf:ORG/NAME``) -> TensorStore.

:mod:`lminspect.weights.store` is the store class only; this module knows the formats on disk
and the fetch cache, so the import graph runs one way: open -> (formats, fetch) -> store.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lminspect.errors import FormatError, UserError
from lminspect.weights.safetensors_format import SafetensorsFile, _read_fd
from lminspect.weights.store import CHAT_TEMPLATE_FILE, TensorStore


def _read_json(path: Path) -> dict[str, Any]:
    try:
        from lminspect.fsutil import read_regular

        data = json.loads(read_regular(path).decode("utf-8"))  # a FIFO is one line, not a hang
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise FormatError(f"{path}: cannot read JSON: {e}") from None
    if not isinstance(data, dict):
        raise FormatError(f"{path}: not a JSON object")
    return data


def _tokenizer_files(path: Path | str) -> tuple[Callable[[], str | None], Callable[[], str | None]]:
    """Lazy readers of the tokenizer.json and chat template next to a model (first use)."""

    def tok_path() -> Path:
        p = Path(path)
        return p / "tokenizer.json" if p.is_dir() else p.parent / "tokenizer.json"

    def tok() -> str | None:
        t = tok_path()
        if not (t.exists() or t.is_symlink()):
            return None
        from lminspect.fsutil import read_regular

        try:  # a FIFO or a folder named tokenizer.json is one line, never a hang or a silent "none"
            return read_regular(t, limit=1 << 30).decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise FormatError(f"{t}: cannot be read ({getattr(e, 'strerror', None) or e})") from None

    def chat() -> str | None:
        t = tok_path()
        return read_chat_template(t.parent) if t.is_file() else None

    return tok, chat


def read_chat_template(folder: Path) -> str | None:
    """A folder's default chat template as transformers reads it: ``chat_template.jinja`` first,
    else ``tokenizer_config.json``'s ``chat_template`` (a string, or a list of named templates
    whose "default" is taken); None when there is none or it cannot be read."""
    f = folder / CHAT_TEMPLATE_FILE
    if f.is_file():
        try:
            return f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
    tc = folder / "tokenizer_config.json"
    if not tc.is_file():
        return None
    try:
        c = json.loads(tc.read_text(encoding="utf-8")).get("chat_template")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None
    if isinstance(c, list):
        c = next((t.get("template") for t in c if isinstance(t, dict) and t.get("name") == "default"), None)
    return c if isinstance(c, str) else None


def _from_safetensors_files(
    path: Path | str, files: list[Path] | list[str], config: dict[str, Any] | Callable[[], dict[str, Any]], fmt: str,
    name: str, weight_map: dict[str, str] | None = None, opened: SafetensorsFile | None = None,
) -> TensorStore:
    if opened is not None:  # one file, already parsed by open_store
        sfs = [opened]
    else:
        sfs = [SafetensorsFile(f) for f in files]
    names = None
    if len(sfs) == 1:
        # the header records carry dtype/shape/nbytes/file: they are the entries,
        # built on first use (the header was validated at open)
        sf = sfs[0]
        entries: Any = lambda: sf.entries  # noqa: E731
        names = sf.names()
        loader = sf.get
    else:
        entries = {}
        by_file = {sf.path: sf for sf in sfs}
        for sf in sfs:
            if not entries.keys().isdisjoint(sf.entries):
                n = next(k for k in sf.entries if k in entries)
                raise FormatError(f"{sf.path}: tensor {n!r} also appears in {entries[n].file.name}")
            entries.update(sf.entries)

        def loader(n: str) -> np.ndarray:
            return by_file[entries[n].file].get(n)

    if weight_map is not None:
        have = entries if names is None else names
        missing = [n for n in weight_map if n not in have]
        if missing:
            raise FormatError(f"{path}: index lists {missing[0]!r} but no shard holds it")
    tok, chat = _tokenizer_files(path)  # Path made inside, on first use
    meta = sfs[0].metadata if len(sfs) == 1 else {}
    store = TensorStore(
        path=path, format=fmt, config=config, entries=entries, loader=loader, name=name,
        tokenizer_json=tok, chat_template=chat, metadata=meta, names=names,
    )
    # the parsed files, so models use their memory maps (one mapping per file: pages counted once)
    store.st_files = {Path(sf.path): sf for sf in sfs}  # type: ignore[attr-defined]
    return store


def open_hf_dir(path: Path) -> TensorStore:
    """A HF model directory: config.json + model.safetensors or a sharded index."""
    cfg_path = path / "config.json"
    config = _read_json(cfg_path) if cfg_path.exists() else {}
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


def _stem(path: str) -> str:
    """``Path(path).stem`` without building a Path."""
    name = os.path.basename(path.rstrip(os.sep)) or path
    i = name.rfind(".")
    return name[:i] if 0 < i < len(name) - 1 else name


def _sibling_config(path: Path) -> dict[str, Any]:
    """config.json next to a single weights file, or {} (absent or unreadable)."""
    cfg_path = path.parent / "config.json"
    if cfg_path.is_file():
        try:
            return _read_json(cfg_path)
        except FormatError:
            return {}
    return {}


def open_store(ref: str | os.PathLike[str], *, prefer: str = "hf") -> TensorStore:
    """Open a model lazily: ``.safetensors``, HF dir, ``.gguf``, a fetched name, ``hf:ORG/NAME``, or a
    training run directory (its latest checkpoint, as ``grow`` reads it).

    ``prefer`` picks the copy of a fetched name (``"hf"`` directory, else the ``"gguf"`` file).
    """
    if isinstance(ref, TensorStore):
        return ref
    s = os.fspath(ref)
    if s.startswith("hf:"):
        from lminspect.weights.fetch import fetch

        return open_hf_dir(fetch(s).hf_dir)
    fs = str(Path(s).expanduser()) if not s or s.startswith("~") else s
    try:
        st = os.stat(fs)
    except (OSError, ValueError):
        st = None
    mode = st.st_mode if st is not None else 0
    if stat.S_ISDIR(mode):
        ck = None
        if os.path.isdir(os.path.join(fs, "checkpoints")):  # (a plain model folder skips the import)
            from lminspect.rundir import run_checkpoint

            ck = run_checkpoint(fs)  # a training run means its latest checkpoint
        if ck is not None:
            store = open_hf_dir(ck)
            store.name = f"{Path(fs).name}@{ck.name}"  # "myrun@step_0000200"
            return store
        return open_hf_dir(Path(fs))
    if stat.S_ISREG(mode):
        # one stat, one raw open: sniff the GGUF magic, then parse the safetensors
        # header from the same descriptor (opening reads the 8-byte length and the
        # JSON header only; the Path objects are built on first use)
        fd = os.open(fs, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            head = _read_fd(fd, 8)
            gguf = head[:4] == b"GGUF" or (fs[-5:].lower() == ".gguf" and Path(fs).suffix.lower() == ".gguf")
            sf = None if gguf else SafetensorsFile(fs, _opened=(fd, st.st_size, head))
        finally:
            os.close(fd)
        if sf is None:
            from lminspect.weights.gguf_format import open_gguf

            return open_gguf(Path(fs))
        # config.json beside a single file is optional and never an error: read on first use
        return _from_safetensors_files(
            fs, [fs], lambda: _sibling_config(Path(fs)), "safetensors", _stem(fs), opened=sf
        )
    if os.sep not in s and "." not in s:
        from lminspect.weights.fetch import resolve_fetched

        fetched = resolve_fetched(s)
        if fetched is not None:
            if prefer == "gguf" or not (fetched.hf_dir / "config.json").is_file():
                store = open_store(fetched.gguf_path)
            else:
                store = open_hf_dir(fetched.hf_dir)
            store.name = s  # "smollm2", not the cache folder's stem ("hf")
            return store
    from lminspect.fsutil import describe_kind

    what = describe_kind(Path(fs)) if s else None
    if what is not None:  # a FIFO, a socket, a symlink loop: say so, not "no such file"
        raise UserError(f"{s}: is {what}, not a model file or folder")
    if s and os.sep not in s and "." not in s:  # a name, not a path: the nearest fetchable one
        import difflib

        from lminspect.weights.fetch import KNOWN

        near = difflib.get_close_matches(s.lower(), list(KNOWN), n=1, cutoff=0.6)
        if near:
            raise UserError(f"{s}: no such file, directory or fetched model; did you mean '{near[0]}'?")
    raise UserError(f"{s}: no such file or directory")
