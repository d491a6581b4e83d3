"""The TUI's only doorway into the library (weights, engine, stitch, training, activations).

The TUI never reads a file format itself. Each function here imports the
library module it needs when first called, so the app starts without torch; the
annotations name the real types (``TYPE_CHECKING`` imports) for readers and
editors. Also keeps the small list of recently opened models in
``cache_dir()/recent.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lminspect.activations.store import ActivationStats
    from lminspect.generate import Generation
    from lminspect.models import LM, LayerCall
    from lminspect.tokenizer import Tokenizer
    from lminspect.train.runlog import Run
    from lminspect.weights import TensorStore


# -- weights -----------------------------------------------------------------


def open_store(ref: str) -> TensorStore:
    """Headers only (``models.open.open_model`` lazily): the engine comes with ``load_model``."""
    from lminspect.models.open import open_model

    return open_model(ref, lazy=True).store


def tensor_names(store: TensorStore) -> list[str]:
    """The names the Weights tree shows: canonical ones (``layers.2.mlp.up.weight``), then the
    stored names that have none (``model.layers.2.mlp.up_proj.weight`` is found as its canonical)."""
    names = list(store.canonical_names())
    return names + [k for k in store.keys() if store.info(k).canonical is None]


def n_layers(store: TensorStore) -> int | None:
    return store.n_layers


def n_heads(store: TensorStore, *, kv: bool = False) -> int | None:
    return store.n_kv_heads if kv else store.n_heads


# -- engine ------------------------------------------------------------------


def open_engine(store: TensorStore, weights: str | None = "auto") -> tuple[LM, Tokenizer]:
    """(engine, tokenizer) of an open store; ``weights`` auto = the stored low-bit decode path on
    CPU when the file has one. Threads as the CLI's (``tui --threads`` applied them already)."""
    from lminspect.models.open import open_model

    _, lm, tok = open_model(store, weights=weights)
    return lm, tok


def generate_fn() -> Callable[..., Generation]:
    """``lminspect.generate.generate`` (a function so tests can slow it down)."""
    from lminspect.generate import generate

    return generate


def interleave(gens: dict[str, Generation], *, cancelled: Callable[[], bool]) -> Generator[tuple[str, str], None, None]:
    """``lminspect.generate.interleave``: the baseline and the plan streamed in turn."""
    from lminspect.generate import interleave as interleave_

    return interleave_(gens, cancelled=cancelled)


# -- stitching ---------------------------------------------------------------


def stitch_presets(layers: int | None = None) -> dict[str, str]:
    """Preset name -> what it does (for the command palette), in the layer numbers of the plan the
    preset rescales to on a ``layers``-layer model (as ``lminspect stitch presets`` prints them)."""
    from lminspect.stitch import PRESETS
    from lminspect.stitch.presets import preset_description

    if not layers:
        return {name: desc for name, (_, desc) in PRESETS.items()}
    return {name: preset_description(name, layers) for name in PRESETS}


def parse_plan(text: str, layers: int) -> list[LayerCall]:
    from lminspect.stitch import parse_plan as parse

    return parse(text, layers)


def lens_results(model: LM, tok: Tokenizer, prompt: str, plans: dict[str, list[LayerCall] | None],
                 target: str | None) -> tuple[dict[str, Any], Any]:
    """The logit lens of ``prompt`` under each plan (``{"plan": ..., "baseline": None}`` with
    Compare ticked), keyed by the plan as text; the target typed as on the command line
    (``readout.target_text``: ``Paris`` means ``' Paris'``). Returns (results, resolved target)."""
    from lminspect.lens import lens_of_text
    from lminspect.lens.readout import target_text

    typed = target_text(target) if target and target.strip() else None
    results: dict[str, Any] = {}
    tgt = None
    for plan in plans.values():
        res, tgt = lens_of_text(model, tok, prompt, plan, target=typed, k=5)
        results[res.plan if res.plan not in results else f"{res.plan} (2)"] = res
    return results, tgt


def lens_tables(results: dict[str, Any], tgt: Any) -> Any:
    """The top-k table of each plan (and the target's note) as one rich renderable."""
    from rich.console import Group
    from rich.text import Text

    from lminspect.lens.render import lens_table

    parts: list[Any] = [lens_table(res) for res in results.values()]
    if tgt is not None and tgt.note:
        parts.insert(0, Text(f"note: {tgt.note}", style="dim"))
    return Group(*parts)


def lens_figure(results: dict[str, Any], width: int, height: int) -> str:
    """The target's probability across plan positions, a line per plan ('' without a target)."""
    from lminspect.lens.render import lens_figure as figure

    return figure(results, width=width, height=height)


def save_lens(results: dict[str, Any], path: Path) -> Path:
    """The lens figure as PNG/SVG (``figures.save_lines``, the same lines as the terminal one)."""
    from lminspect.figures import save_lines
    from lminspect.lens.render import lens_lines

    d = lens_lines(results)
    if d is None:
        from lminspect.errors import UserError

        raise UserError("the lens has no target: nothing to plot")
    return save_lines(path, d.series, title=d.title, xlabel=d.xlabel, ylabel=d.ylabel)


# -- training runs -----------------------------------------------------------


def load_run(path: str | os.PathLike[str]) -> Run:
    from lminspect.train.runlog import load_run as load

    return load(path)


def run_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Name, experiment, steps, last loss and status of a run (reads only the logs' tails)."""
    from lminspect.train.runlog import run_summary as summary

    return summary(path)


def plots_module() -> ModuleType:
    from lminspect import plots

    return plots


def find_runs(root: str | os.PathLike[str]) -> list[Path]:
    """Run directories under ``root`` (``rundir.find_runs``: the root itself, or its folders and
    ``--run-root`` batches below them, ``runs/cmp/gpt2ish``), in name order. Only names are looked
    at here; reading a run is ``load_run``'s job."""
    from lminspect.rundir import find_runs as find

    return [path for path, _ in find(root)]


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


def load_activations(path: str | os.PathLike[str]) -> ActivationStats:
    from lminspect.activations.store import load

    return load(path)


def activations_diff(a: ActivationStats, b: ActivationStats) -> list[dict[str, Any]]:
    from lminspect.activations.diff import diff

    return diff(a, b)


def model_identity(store: TensorStore) -> dict[str, Any]:
    from lminspect.activations.store import model_identity as identity

    return identity(store)


# -- comparisons (docs/compare.md) ---------------------------------------------


def open_ref(ref: str) -> TensorStore:
    """A store for a model, checkpoint or run dir (its newest checkpoint)."""
    from lminspect.compare.checkpoints import open_ref as open_

    return open_(ref)


def diff_tensor(a: TensorStore, b: TensorStore, name: str) -> dict[str, Any] | None:
    """``lminspect diff``'s numbers for one tensor of ``a`` against ``b`` (None: not in ``b``)."""
    from lminspect.compare.diff import Pair, diff_pair

    cname = a.info(name).canonical or name
    if cname not in b:
        return None
    return diff_pair(a, b, Pair(cname, tuple(a.info(cname).shape), tuple(b.info(cname).shape)))


def timeline(run_dir: str | os.PathLike[str], stat: str) -> tuple[list[int], list[Any], dict[str, list[Any]]]:
    """``(steps, tokens, {component: mean over layers per checkpoint})`` of a run."""
    from lminspect.compare.checkpoints import list_checkpoints
    from lminspect.compare.timeline import stat_records, timeline_columns

    return timeline_columns(stat_records(list_checkpoints(run_dir), stat))


def embedding_pca(run_dir: str | os.PathLike[str]) -> tuple[Any, list[tuple[str, int]]]:
    """A run's token embeddings across checkpoints in one PCA plane (fitted on the newest), and
    the 6 tokens that moved most, labelled by the newest checkpoint's tokenizer."""
    from lminspect.compare.embeddings import labelled_pca
    from lminspect.rundir import list_checkpoints

    return labelled_pca(list_checkpoints(run_dir))


def embedding_figure(pca: Any, labelled: list[tuple[str, int]], width: int, height: int) -> str:
    from lminspect.compare.embeddings import embedding_figure as figure

    return figure(pca, labelled, width=width, height=height)


def timeline_figure(steps: list[int], cols: dict[str, list[Any]], stat: str, width: int, height: int) -> str:
    from lminspect.compare.timeline import timeline_figure as figure

    return figure(steps, cols, stat, width=width, height=height)


def find_activations(path: str | os.PathLike[str]) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """Activation results directories at ``path``: the directory itself when it holds an
    ``index.json``, else its subdirectories that do. Returns ``([(dir, index)], problems)``;
    a path that is missing, a file, or holds no results dir raises ``UserError`` (one line)."""
    from lminspect.activations.store import read_index
    from lminspect.errors import UserError

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


def _fetched_name(ref: str) -> str | None:
    """``smollm2`` for ``cache_dir()/models/smollm2/hf`` (what the name opens), else None."""
    try:
        rel = Path(ref).resolve().relative_to((_cache_dir() / "models").resolve())
    except (ValueError, OSError):
        return None
    return rel.parts[0] if len(rel.parts) == 2 and rel.parts[1] == "hf" else None


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
        if ref in seen or _fetched_name(ref) in seen:  # a fetched model's own folder: listed by its name
            continue
        if "/" in ref and not ref.startswith("hf:") and not os.path.exists(ref):
            continue
        seen.add(ref)
        out.append(KnownModel(ref, f"{ref}  (recent)", "recent"))
    return out


# folder names that say nothing about the model: the title shows what holds them instead
GENERIC_NAMES = frozenset({"hf", "model", "weights", "snapshot", "final", "latest"})


def model_label(ref: str, store: TensorStore) -> str:
    """The model's name for the title and the tree: a name as typed (``smollm2``); for a path the
    store's name, except a generic folder name: a fetched model's ``models/smollm2/hf`` (how
    recent.json keeps it) is ``smollm2``, any other ``.../run7/hf`` is ``run7/hf``."""
    if not os.path.exists(ref):
        return ref
    path = Path(ref).resolve()
    name = getattr(store, "name", None) or path.name
    if name.lower() not in GENERIC_NAMES:
        return name
    try:
        return path.relative_to((_cache_dir() / "models").resolve()).parts[0]
    except (ValueError, IndexError):
        return f"{path.parent.name}/{name}" if path.parent.name else name


def has_checkpoints(run: str | os.PathLike[str]) -> bool:
    """Whether a run has checkpoints to open as a model (its weights), not only its curves."""
    from lminspect.rundir import holds_checkpoints

    return holds_checkpoints(run)


def user_message(exc: BaseException) -> str:
    """One line for a notification/modal: UserError's message, else type and message."""
    msg = getattr(exc, "message", None)
    if isinstance(msg, str) and msg:
        return msg
    return f"{type(exc).__name__}: {exc}"
