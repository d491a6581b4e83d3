"""The TUI's only doorway into the library (weights, engine, stitch, training, activations).

The TUI never reads a file format itself. Each function here imports the
library module it needs lazily, so the app starts fast and a library that has
not landed yet turns into a clear message on its tab (``Unavailable``) instead of
an import error at start-up. Also keeps the small list of recently opened
models in ``cache_dir()/recent.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class Unavailable(Exception):
    """A library piece the TUI needs is not installed/implemented; the message says which."""


def _import(module: str, attr: str) -> Any:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise Unavailable(f"{module} is not available ({exc})") from exc
    try:
        return getattr(mod, attr)
    except AttributeError as exc:
        raise Unavailable(f"{module}.{attr} is not available yet") from exc


# -- weights -----------------------------------------------------------------


def open_store(ref: str) -> Any:
    return _import("lminspect.weights", "open_store")(ref)


def n_layers(store: Any) -> int | None:
    cfg = getattr(store, "config", None) or {}
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(cfg.get(key), int):
            return cfg[key]
    return None


def n_heads(store: Any, *, kv: bool = False) -> int | None:
    cfg = getattr(store, "config", None) or {}
    if kv:
        for key in ("num_key_value_heads", "num_kv_heads"):
            if isinstance(cfg.get(key), int):
                return cfg[key]
    for key in ("num_attention_heads", "n_head"):
        if isinstance(cfg.get(key), int):
            return cfg[key]
    return None


# -- engine ------------------------------------------------------------------


def load_model(store: Any) -> Any:
    return _import("lminspect.models", "load_model")(store)


def load_tokenizer(store: Any) -> Any:
    return _import("lminspect.tokenizer", "load_tokenizer")(store)


def generate_fn() -> Any:
    return _import("lminspect.generate", "generate")


# -- stitching ---------------------------------------------------------------


def parse_plan(text: str, layers: int) -> Any:
    return _import("lminspect.stitch", "parse_plan")(text, layers)


# -- training runs -----------------------------------------------------------


def load_run(path: str | os.PathLike[str]) -> Any:
    return _import("lminspect.train.runlog", "load_run")(path)


def run_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Name, experiment, steps, last loss and status of a run (reads only the logs' tails)."""
    try:
        return _import("lminspect.train.runlog", "run_summary")(path)
    except Unavailable:
        return {"name": Path(path).name, "exp": "?", "steps": 0, "loss": None, "status": "?"}


def plots_module() -> Any:
    import importlib

    try:
        return importlib.import_module("lminspect.plots")
    except ImportError as exc:
        raise Unavailable(f"lminspect.plots is not available ({exc})") from exc


def find_runs(root: str | os.PathLike[str]) -> list[Path]:
    """Run directories under ``root`` (a dir holding ``stats.jsonl`` or ``config.json``), in name order.

    Only names are looked at here; reading a run is ``load_run``'s job.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found: list[Path] = [root] if (root / "stats.jsonl").exists() else []
    for cand in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (cand / "stats.jsonl").exists() or (cand / "config.json").exists():
            found.append(cand)
    return found


def run_mtime(path: Path) -> float:
    """Newest modification time of the run's files we plot from (cheap; drives live refresh)."""
    best = 0.0
    for name in ("stats.jsonl", "config.json"):
        try:
            best = max(best, (path / name).stat().st_mtime)
        except OSError:
            pass
    return best


# -- activation statistics ---------------------------------------------------


def load_activations(path: str | os.PathLike[str]) -> Any:
    return _import("lminspect.activations.store", "load")(path)


def activations_diff(a: Any, b: Any) -> list[dict[str, Any]]:
    return _import("lminspect.activations.diff", "diff")(a, b)


def model_identity(store: Any) -> dict[str, Any]:
    return _import("lminspect.activations.store", "model_identity")(store)


def find_activations(path: str | os.PathLike[str]) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """Activation results directories at ``path``: the directory itself when it holds an
    ``index.json``, else its subdirectories that do. Returns ``([(dir, index)], problems)``;
    a path that is missing, a file, or holds no results dir raises ``UserError`` (one line)."""
    from lminspect.errors import UserError

    read_index = _import("lminspect.activations.store", "read_index")
    root = Path(path).expanduser()
    if not root.exists():
        raise UserError(f"{root}: no such directory")
    if not root.is_dir():
        raise UserError(f"{root}: not a directory (give an activations results dir, or a folder of them)")
    index = read_index(root)  # FormatError (a UserError) when index.json is there but not ours
    if index is not None:
        return [(root, index)], []
    found: list[tuple[Path, dict[str, Any]]] = []
    problems: list[str] = []
    for cand in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            idx = read_index(cand)
        except UserError as exc:
            problems.append(user_message(exc))
            continue
        if idx is not None:
            found.append((cand, idx))
    if not found:
        why = f" ({problems[0]})" if problems else ""
        raise UserError(f"{root}: not an activations results dir and holds none (no index.json){why}")
    return found, problems


# -- known models ------------------------------------------------------------


@dataclass(frozen=True)
class KnownModel:
    ref: str  # what open_store accepts
    label: str
    source: str  # "cache" | "recent"


def _cache_dir() -> Path:
    from lminspect.fsutil import cache_dir

    return cache_dir()


def recent_models() -> list[str]:
    try:
        data = json.loads((_cache_dir() / "recent.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(data, list):
        return []
    return [str(x) for x in data if isinstance(x, str)]


def remember_model(ref: str) -> None:
    """Put ``ref`` first in recent.json (at most 20 entries); never fails the app."""
    from lminspect.fsutil import atomic_write_text

    ref_s = str(ref)
    if os.path.exists(ref_s):
        ref_s = str(Path(ref_s).resolve())
    items = [ref_s] + [r for r in recent_models() if r != ref_s]
    try:
        atomic_write_text(_cache_dir() / "recent.json", json.dumps(items[:20], indent=1))
    except OSError:
        pass


def known_models() -> list[KnownModel]:
    """Fetched models (``cache_dir()/models/*``) then recently opened paths, without duplicates."""
    out: list[KnownModel] = []
    seen: set[str] = set()
    models_dir = _cache_dir() / "models"
    if models_dir.is_dir():
        for p in sorted(models_dir.iterdir()):
            if p.name.startswith("."):
                continue
            out.append(KnownModel(p.name, f"{p.name}  (fetched)", "cache"))
            seen.add(p.name)
    for ref in recent_models():
        if ref in seen:
            continue
        if "/" in ref and not ref.startswith("hf:") and not os.path.exists(ref):
            continue
        seen.add(ref)
        out.append(KnownModel(ref, f"{ref}  (recent)", "recent"))
    return out


def user_message(exc: BaseException) -> str:
    """One line for a notification/modal: UserError's message, else type and message."""
    msg = getattr(exc, "message", None)
    if isinstance(msg, str) and msg:
        return msg
    if isinstance(exc, Unavailable):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
