"""Grow a model on disk: read a checkpoint / HF dir, grow it, write a model directory atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lminspect.errors import UserError
from lminspect.grow.core import GrowSpec, grow_model

if TYPE_CHECKING:  # annotations only
    from lminspect.models.common import LM


def resolve_model_dir(ref: str | Path) -> str:
    """A run directory means its latest checkpoint; anything else is passed to ``open_store``."""
    from lminspect.rundir import run_checkpoint

    ck = run_checkpoint(ref)
    return str(ck) if ck is not None else str(ref)


def load_for_growth(ref: str | Path) -> tuple[Any, Any]:
    """(model in float32 on cpu, store) for a checkpoint dir, HF dir or run dir."""
    from lminspect.models.open import open_model

    opened = open_model(resolve_model_dir(ref), tokenizer=False, lazy=True)
    cfg = dict(opened.store.config or {})
    if cfg.get("lminspect_value_norm"):
        raise UserError(f"{ref}: cannot grow a value_norm model (per-token value norms have no grown form)")
    return opened.model, opened.store


def save_model_dir(model: LM, out: str | Path, *, tokenizer_json: str | None = None,
                   extra_config: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` (canonical names), ``config.json`` (HF + ``lminspect_arch``) and
    ``tokenizer.json`` into ``out`` atomically: a directory ``open_store`` / ``load_model`` read."""
    from safetensors.torch import save_file

    from lminspect.fsutil import atomic_dir

    model = getattr(model, "module", model)
    sd = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    emb, head = sd.get("embed.tokens.weight"), sd.get("head.weight")
    if emb is not None and head is not None and emb.data_ptr() == head.data_ptr():
        del sd["head.weight"]
    cfg = dict(model.config.to_hf())
    cfg["lminspect_arch"] = model.arch
    cfg.update(extra_config or {})
    out = Path(out)
    need = sum(v.numel() * v.element_size() for v in sd.values())  # for a full disk's one line
    with atomic_dir(out, need=need) as tmp:
        save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        if tokenizer_json:
            (tmp / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    return out


def grow_dir(src: str | Path, out: str | Path, spec: GrowSpec, *, seed: int = 0) -> tuple[Any, Any, Path]:
    """Grow the model at ``src`` into the directory ``out``; returns (old model, new model, out)."""
    out = Path(out)
    if out.exists() and out.resolve() == Path(resolve_model_dir(src)).resolve():
        raise UserError(f"--out {out}: refusing to overwrite the source model")
    model, store = load_for_growth(src)
    grown, _ = grow_model(model, spec, seed=seed)
    tok = store.tokenizer_json()
    extra = {"lminspect_grown_from": str(src), "lminspect_growth": spec.as_dict()}
    save_model_dir(grown, out, tokenizer_json=tok, extra_config=extra)
    return model, grown, out
