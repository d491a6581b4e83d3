"""Checkpoints: one directory per save, browsable as a model and resumable as a run.

``RUN/checkpoints/step_0000100/``:

- ``model.safetensors`` - the exported, inference-ready weights under canonical names
  (sacrificial parameters baked in or dropped), so ``lminspect.open(dir)`` and the engine
  read it like any model directory;
- ``config.json`` - HF-style config plus ``lminspect_arch`` / ``lminspect_experiment``;
- ``tokenizer.json`` - the tokenizer the run used (absent for the byte tokenizer);
- ``trainer.safetensors`` - everything to resume exactly: the full training module state
  (``model/...``, sacrificial parts included), optimizer tensors (``optim/<i>/<key>``),
  RNG states (``rng/...``); JSON metadata holds step, tokens, data position and the
  optimizer's non-tensor state.

``RUN/checkpoints/latest`` names the newest checkpoint; which checkpoints are complete (and so
the newest complete one) is ``lminspect.rundir``'s to say. Every directory is
built under a temporary name and renamed into place (``fsutil.atomic_dir``), so a crash
mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from lminspect.errors import FormatError, UserError
from lminspect.fsutil import atomic_dir, atomic_write_text
from lminspect.rundir import CHECKPOINT_FILES, checkpoint_problem, latest_checkpoint, run_checkpoint  # noqa: F401 - owner: rundir


def _optim_to_flat(sd: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, Any] = {"param_groups": sd["param_groups"], "state": {}}
    for idx, st in sd["state"].items():
        plain = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim/{idx}/{k}"] = v.detach().to("cpu").contiguous().clone()
            else:
                plain[k] = v
        rest["state"][str(idx)] = plain
    return tensors, rest


def _optim_from_flat(tensors: dict[str, Any], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(k): dict(v) for k, v in rest["state"].items()}
    for name, t in tensors.items():
        if name.startswith("optim/"):
            _, idx, key = name.split("/", 2)
            state.setdefault(int(idx), {})[key] = t
    return {"state": state, "param_groups": rest["param_groups"]}


def save_checkpoint(run_dir: Path, *, step: int, exported: dict[str, Any], config: dict[str, Any],
                    tokenizer_json: str | None, model_state: dict[str, Any], optim_state: dict[str, Any],
                    rng: dict[str, Any], train_state: dict[str, Any], keep: int = 2,
                    extra_files: dict[str, str] | None = None) -> Path:
    """Write ``checkpoints/step_NNNNNNN`` atomically, point ``latest`` at it, prune old ones."""
    from safetensors.torch import save_file

    ckdir = Path(run_dir) / "checkpoints"
    name = f"step_{step:07d}"
    tensors = {f"model/{k}": v.detach().to("cpu").contiguous().clone() for k, v in model_state.items()}
    otensors, orest = _optim_to_flat(optim_state)
    tensors.update(otensors)
    for k, v in rng.items():
        tensors[f"rng/{k}"] = v
    meta = {"lminspect_trainer": "1", "state": json.dumps(train_state), "optim": json.dumps(orest)}
    need = sum(v.numel() * v.element_size() for d in (exported, tensors) for v in d.values()
               if hasattr(v, "element_size"))  # for a full disk's one line
    with atomic_dir(ckdir / name, need=need) as tmp:
        save_file(exported, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if tokenizer_json is not None:
            (tmp / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
        save_file(tensors, str(tmp / "trainer.safetensors"), metadata=meta)
        for fname, text in (extra_files or {}).items():  # e.g. seen_ids.json of ordered training
            (tmp / fname).write_text(text, encoding="utf-8")
    atomic_write_text(ckdir / "latest", name + "\n")
    if keep > 0:
        old = sorted(p for p in ckdir.glob("step_*") if p.is_dir() and p.name != name)
        for p in old[: max(0, len(old) - (keep - 1))]:
            shutil.rmtree(p, ignore_errors=True)
    return ckdir / name


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read ``trainer.safetensors``: model state, optimizer state dict, rng tensors, train state."""
    from safetensors import safe_open

    f = Path(path) / "trainer.safetensors"
    if not f.is_file():
        raise UserError(f"checkpoint {path}: no trainer.safetensors (not a training checkpoint)")
    try:
        with safe_open(str(f), framework="pt") as sf:
            meta = sf.metadata() or {}
            tensors = {k: sf.get_tensor(k) for k in sf.keys()}  # noqa: SIM118 - safe_open has no iteration
        state = json.loads(meta["state"])
        orest = json.loads(meta["optim"])
    except (KeyError, ValueError, OSError) as e:
        raise FormatError(f"checkpoint {f}: unreadable ({e})") from e
    except Exception as e:  # safetensors raises its own error type on corrupt headers
        raise FormatError(f"checkpoint {f}: unreadable ({e})") from e
    return {
        "model": {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")},
        "optim": _optim_from_flat(tensors, orest),
        "rng": {k[len("rng/"):]: v for k, v in tensors.items() if k.startswith("rng/")},
        "state": state,
    }
