"""The :class:`Experiment` record and the export of a trained model to canonical weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Experiment:
    """A trainable model recipe.

    ``model_factory(vocab_size, seq_len, **overrides)`` builds a freshly initialised
    ``nn.Module`` whose ``forward(input_ids)`` returns logits ``[B, T, vocab]`` and whose
    ``state_dict()`` uses lminspect's canonical names (plus, optionally, *sacrificial*
    parameters that exist only while training).

    Sacrificial training (lmplay's term): extra parameters help training but are not
    part of the deployed model. List their name prefixes in ``sacrificial`` (they are
    dropped on export) and, when their effect must be folded into ordinary weights
    (e.g. unified embeddings: an MLP that computes the token table), give an
    ``export`` function returning the final canonical state dict.
    """

    name: str
    description: str  # first line is the one-line summary shown by `exp list`
    model_factory: Callable[..., Any]
    arch: str = "gpt2"  # "lminspect_arch" written into checkpoint config.json
    # "default" (the shipped BPE, vocab 4096), "byte" (256 bytes + <|endoftext|>),
    # or a path to a tokenizer.json / a directory holding one
    tokenizer: str = "default"
    defaults: dict[str, Any] = field(default_factory=dict)  # training-option defaults (lr, optimizer...)
    sacrificial: tuple[str, ...] = ()  # state-dict name prefixes dropped on export
    export: Callable[[Any], dict[str, Any]] | None = None  # model -> canonical state dict
    export_config: Callable[[Any], dict[str, Any]] | None = None  # model -> HF-style config dict
    on_step: Callable[[Any, int], None] | None = None  # called after every optimizer step
    unavailable: str | None = None  # set when the recipe exists but cannot be built yet

    @property
    def summary(self) -> str:
        return self.description.strip().splitlines()[0] if self.description.strip() else ""

    def build(self, vocab_size: int, seq_len: int, **overrides: Any) -> Any:
        """Build the model; a recipe marked ``unavailable`` fails with a one-line UserError."""
        if self.unavailable:
            from lminspect.errors import UserError

            raise UserError(f"experiment {self.name!r} is not available yet: {self.unavailable}")
        from lminspect.errors import UserError

        try:
            model = self.model_factory(vocab_size, seq_len, **overrides)
        except UserError:
            raise
        except (Exception, SystemExit) as e:  # noqa: BLE001 - a plugin's bug is reported, never a traceback
            raise UserError(f"experiment {self.name!r}: its model_factory failed: {type(e).__name__}: {e}") from None
        import torch

        if not isinstance(model, torch.nn.Module):
            raise UserError(f"experiment {self.name!r}: its model_factory returned {type(model).__name__}, "
                            "not a torch.nn.Module")
        return model


def export_state_dict(exp: Experiment, model: Any) -> dict[str, Any]:
    """Canonical, inference-ready tensors of ``model``: sacrificial parts baked in or dropped.

    A tied head (``head.weight`` sharing storage with ``embed.tokens.weight``) is left
    out, as the weight-store contract says; safetensors cannot store shared tensors anyway.
    """
    import torch

    model = getattr(model, "module", model)  # DDP wrapper
    if exp.export is not None:
        sd = dict(exp.export(model))
    else:
        sd = dict(model.state_dict())
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if any(k == p or k.startswith(p if p.endswith(".") else p + ".") for p in exp.sacrificial):
            continue
        out[k.removeprefix("_orig_mod.")] = v
    emb, head = out.get("embed.tokens.weight"), out.get("head.weight")
    if emb is not None and head is not None and emb.data_ptr() == head.data_ptr():
        del out["head.weight"]
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in out.items()}


def export_config(exp: Experiment, model: Any) -> dict[str, Any]:
    """HF-style config.json content plus ``lminspect_arch`` / ``lminspect_experiment``."""
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    if exp.export_config is not None:
        cfg = dict(exp.export_config(model))
    else:
        c = getattr(model, "config", None)
        if c is not None and hasattr(c, "to_hf"):
            cfg = dict(c.to_hf())
        elif isinstance(c, dict):
            cfg = dict(c)
        else:
            cfg = {}
    cfg["lminspect_arch"] = exp.arch
    cfg["lminspect_experiment"] = exp.name
    return cfg
