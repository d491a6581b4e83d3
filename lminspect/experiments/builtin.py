"""The built-in experiments, registered as entry points in lminspect's own pyproject.

- ``gpt2ish``: lmplay's baseline - a 6-layer GPT-2 (learned positions, LayerNorm, GeLU, tied head).
- ``llamaish``: the same budget as a Llama (RoPE, SwiGLU, RMSNorm, grouped-query attention).
- ``value_norm``: gpt2ish with a LayerNorm on every value projection (lmplay's value norm).
- ``growing``: a model grown while training (seed 003), by :mod:`lminspect.grow.schedule`.

Model options (``lminspect train --set KEY=VALUE``) are the family config's fields, e.g.
``n_layer``, ``dim``, ``n_head``, ``ffn_dim``.
"""

from __future__ import annotations

from typing import Any

from lminspect.errors import UserError
from lminspect.experiments.base import Experiment

# lmplay's baseline: 6 blocks, 768 wide, 12 heads
BASE_SHAPE = {"n_layer": 6, "dim": 768, "n_head": 12}


def _config(cls: type, base: dict[str, Any], overrides: dict[str, Any]) -> Any:
    fields = cls.__dataclass_fields__
    bad = sorted(set(overrides) - set(fields))
    if bad:
        raise UserError(f"unknown model option(s) {', '.join(bad)} for {cls.__name__} "
                        f"(known: {', '.join(fields)})")
    from lminspect.validate import typed_value

    overrides = {k: typed_value("--set", k, v, fields[k].type) for k, v in overrides.items()}
    kw = {**base, **overrides}
    for k in ("dim", "n_head"):  # the derived sizes below divide by these
        if isinstance(kw.get(k), int) and kw[k] < 1:
            raise UserError(f"--set {k}={kw[k]}: must be a positive integer")
    if "ffn_dim" not in overrides and "dim" in kw:
        kw["ffn_dim"] = _ffn(cls, kw["dim"])
    if "head_dim" in fields and "head_dim" not in overrides:
        kw["head_dim"] = kw["dim"] // kw["n_head"]
    if "n_kv_head" in fields and "n_kv_head" not in overrides:
        kw["n_kv_head"] = kw["n_head"] // 3 if kw["n_head"] % 3 == 0 else kw["n_head"]
    from lminspect.models.checks import check_config

    cfg = cls(**kw)
    check_config(cfg, "model options (--set)")
    return cfg


def _ffn(cls: type, dim: int) -> int:
    if cls.__name__ == "LlamaConfig":  # SwiGLU: 8/3 * dim keeps the parameter count of a 4*dim GeLU MLP
        return ((8 * dim // 3) + 63) // 64 * 64
    return 4 * dim


def make_gpt2ish(vocab_size: int, seq_len: int, **overrides: Any):
    from lminspect.models import GPT2, GPT2Config

    cfg = _config(GPT2Config, {"vocab_size": vocab_size, "context_length": seq_len, **BASE_SHAPE}, overrides)
    return GPT2(cfg)


def make_llamaish(vocab_size: int, seq_len: int, **overrides: Any):
    from lminspect.models import Llama, LlamaConfig

    base = {"vocab_size": vocab_size, "context_length": seq_len, "tie_embeddings": True, **BASE_SHAPE}
    return Llama(_config(LlamaConfig, base, overrides))


def make_value_norm(vocab_size: int, seq_len: int, **overrides: Any):
    from lminspect.models import add_value_norm

    return add_value_norm(make_gpt2ish(vocab_size, seq_len, **overrides))


def _value_norm_config(model: Any) -> dict[str, Any]:
    cfg = model.config.to_hf()
    # not foldable into plain weights (a per-token normalisation): readers must add the norm
    cfg["lminspect_value_norm"] = True
    return cfg


gpt2ish = Experiment(
    name="gpt2ish",
    description=(
        "lmplay's baseline: a 6-layer GPT-2 (learned positions, pre-LayerNorm, GeLU MLP, tied head).\n"
        "Width 768 with 12 heads unless overridden (--set dim=384 --set n_head=6 for a CPU-sized model). "
        "Trained with Adagrad at a fixed lr of 6e-4 by default, like lmplay's published runs; every other "
        "experiment is compared against it with `lminspect plot --diff`."
    ),
    model_factory=make_gpt2ish,
    arch="gpt2",
)

llamaish = Experiment(
    name="llamaish",
    description=(
        "The baseline's budget as a Llama: RoPE, SwiGLU MLP, RMSNorm, grouped-query attention, tied head.\n"
        "Same depth and width as gpt2ish (6 x 768, 12 query heads, 4 KV heads, SwiGLU width 8/3 d), so the "
        "curves compare the block design rather than the size."
    ),
    model_factory=make_llamaish,
    arch="llama",
)

value_norm = Experiment(
    name="value_norm",
    description=(
        "gpt2ish with a LayerNorm on every value projection (lmplay's 'value norm').\n"
        "A cheap change to the standard block that lmplay reports as a respectable gain. The norms are "
        "part of the model (not sacrificial): exported checkpoints carry layers.N.attn.v_norm.* and "
        "config.json says lminspect_value_norm=true."
    ),
    model_factory=make_value_norm,
    arch="gpt2",
    export_config=_value_norm_config,
)


def growing() -> Experiment:
    """The growth experiment (seed 003): a base model grown while training by the events of a schedule.

    The growth engine (:mod:`lminspect.grow.schedule`) is imported here, when the experiment is
    loaded; a build without ``lminspect.grow`` gets a recipe marked unavailable instead.
    """
    try:
        from lminspect.grow import schedule as growth  # via the package, so a build without it lands below
    except ImportError:
        return Experiment(
            name="growing",
            description=(
                "Grow a GPT while training (width, depth, vocab) with function-preserving init (seed 003).\n"
                "Provided by lminspect.grow; not available in this build yet."
            ),
            model_factory=make_gpt2ish,
            unavailable="the growth engine (lminspect.grow) is not installed",
        )

    bases = {"llamaish": (make_llamaish, "llama"), "gpt2ish": (make_gpt2ish, "gpt2")}

    def factory(vocab_size: int, seq_len: int, schedule: Any = None, base: str = "llamaish",
                old_lr_scale: float | None = None, **overrides: Any) -> Any:
        if base not in bases:
            raise UserError(f"growing: --set base={base!r}: choose {' or '.join(bases)}")
        make, arch = bases[base]
        events, scale = growth.load_schedule(schedule)
        model = make(vocab_size, seq_len, **overrides)
        exp.arch = arch  # checkpoints say which family the grown model is
        model.lminspect_growth = growth.GrowthController(
            events, scale if old_lr_scale is None else float(old_lr_scale))
        return model

    exp = Experiment(
        name="growing",
        description=(
            "Grow a GPT while training (seed 003, building babel): depth, width, heads, ffn, vocab.\n"
            "Trains --set base=llamaish (default) or gpt2ish and applies the growth events of --set "
            "schedule=FILE.json (or inline JSON: [{\"tokens\": 20000, \"layers\": 2}, ...]) with "
            "function-preserving init, carrying the optimizer state; --set old_lr_scale=0.5 trains older "
            "parameter generations more slowly (one param group per generation). See docs/growth.md."
        ),
        model_factory=factory,
        arch="llama",
    )
    return exp
