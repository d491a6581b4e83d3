"""Model config values checked before anything is built: one line for zero or negative sizes,
sizes that do not divide, and (for a model built from scratch) shapes whose float32 parameters
would not fit in memory. A model loaded from a file is checked by ``load_model`` instead, which
counts what it will really allocate (the memory-mapped file's pages are shared and evictable)."""

from __future__ import annotations

import math
from typing import Any

from lminspect.errors import UserError

_SIZES = ("vocab_size", "dim", "n_layer", "n_head", "n_kv_head", "head_dim", "ffn_dim", "context_length")


_HF_SIZE_KEYS = ("hidden_size", "n_embd", "d_model", "num_hidden_layers", "n_layer", "num_attention_heads",
                 "n_head", "num_key_value_heads", "num_kv_heads", "intermediate_size", "n_inner", "vocab_size",
                 "max_position_embeddings", "n_positions", "n_ctx", "head_dim")


def config_from_dict(cfg_cls: type, config: dict, where: str) -> Any:
    """``cfg_cls.from_hf(config)`` with a bad value (text where a number belongs, a zero head
    count) reported as one line naming ``where``, then :func:`check_config` (sizes only: what a
    config's model costs depends on how its weights are stored, see ``load_model``). Sizes must be JSON
    integers: ``"hidden_size": "64"`` is refused, not converted (a config that lies elsewhere too)."""
    for key in _HF_SIZE_KEYS:
        v = config.get(key) if isinstance(config, dict) else None
        if isinstance(v, str | bool | list | dict) or (isinstance(v, float) and not v.is_integer()):
            raise UserError(f"{where}: config has a bad value: {key} = {v!r}; must be an integer (a JSON number "
                            "without quotes)")
    try:
        cfg = cfg_cls.from_hf(config)
    except UserError as e:
        raise UserError(f"{where}: {e.message}") from None
    except (ValueError, TypeError, ZeroDivisionError, OverflowError, AttributeError) as e:
        raise UserError(f"{where}: config has a bad value ({e})") from None
    check_config(cfg, where, memory=False)
    return cfg


def param_estimate(cfg: Any) -> int:
    """Parameters (plus position tables) a config asks for, from its sizes alone."""
    dim, n_layer = int(cfg.dim), int(cfg.n_layer)
    ffn = int(getattr(cfg, "ffn_dim", 4 * dim))
    per_layer = 4 * dim * dim + 3 * dim * ffn
    return n_layer * per_layer + 2 * int(cfg.vocab_size) * dim + int(cfg.context_length) * dim


def check_config(cfg: Any, where: str, memory: bool = True) -> None:
    """Positive integer sizes, heads that divide the width, and (``memory``) a shape whose
    float32 parameters, built from scratch, fit in memory."""
    from lminspect import limits

    for name in _SIZES:
        v = getattr(cfg, name, None) if name != "head_dim" or "head_dim" in getattr(
            cfg, "__dataclass_fields__", {}) else None
        if v is None and name in ("n_kv_head", "head_dim"):
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserError(f"{where}: {name} = {v!r}; must be a positive integer")
    if "head_dim" not in cfg.__dataclass_fields__ and cfg.dim % cfg.n_head:
        raise UserError(f"{where}: width {cfg.dim} is not divisible by {cfg.n_head} heads")
    n_kv = getattr(cfg, "n_kv_head", None)
    if n_kv is not None and cfg.n_head % n_kv:
        raise UserError(f"{where}: {cfg.n_head} query heads are not a multiple of {n_kv} kv heads")
    for name in ("norm_eps", "rope_theta"):
        v = getattr(cfg, name, None)
        if v is not None and (not isinstance(v, int | float) or not math.isfinite(v) or v <= 0):
            raise UserError(f"{where}: {name} = {v!r}; must be a positive finite number")
    limits.check_count(f"{where}: layers", cfg.n_layer, limits.MAX_LAYERS)
    for name in ("dim", "ffn_dim", "n_head", "context_length"):
        limits.check_count(f"{where}: {name}", int(getattr(cfg, name)), limits.MAX_WIDTH * 8)
    if memory:
        n = param_estimate(cfg)
        limits.check_memory(f"{where}: a float32 model of about {n:,} parameters", 4 * n)
