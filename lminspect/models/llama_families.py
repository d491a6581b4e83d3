"""The config fields that set the Llama engine apart per family, read from and written to HF
config.json (the key tables that say what is accepted are in weights/families.py)."""

from __future__ import annotations

from typing import Any

from lminspect.errors import UserError
from lminspect.models.rope import SCALINGS, rope_scaling_of

# config.json of each family: (architectures entry, model_type)
_HF_NAMES = {"llama": ("LlamaForCausalLM", "llama"), "mistral": ("MistralForCausalLM", "mistral"),
             "qwen2": ("Qwen2ForCausalLM", "qwen2"), "qwen3": ("Qwen3ForCausalLM", "qwen3"),
             "granite": ("GraniteForCausalLM", "granite"), "smollm3": ("SmolLM3ForCausalLM", "smollm3"),
             "olmo2": ("Olmo2ForCausalLM", "olmo2")}


def _family(cfg: dict) -> str:
    from lminspect.weights.families import family_of

    spec = family_of(cfg)
    return spec.name if spec is not None and spec.name in _HF_NAMES else "llama"


def _windows(cfg: dict, fam: str, n_layer: int) -> tuple[int | None, list[int] | None]:
    """(sliding_window, windowed layers) as transformers derives them per family."""
    if fam == "mistral":
        return cfg.get("sliding_window"), None
    if fam not in ("qwen2", "qwen3", "smollm3") or not cfg.get("use_sliding_window"):
        return None, None
    window = cfg.get("sliding_window")
    if window is None:
        return None, None
    types = cfg.get("layer_types")
    if types is None:
        if fam == "smollm3":
            raise UserError("smollm3 config: use_sliding_window without layer_types is not supported")
        mw = int(cfg.get("max_window_layers") or 0)
        types = ["sliding_attention" if i >= mw else "full_attention" for i in range(n_layer)]
    layers = [i for i, t in enumerate(types) if t == "sliding_attention"]
    return (int(window), layers) if layers else (None, None)


def family_fields(cfg: dict) -> dict[str, Any]:
    """The ``LlamaConfig`` fields beyond plain Llama for a HF config dict."""
    fam = _family(cfg)
    n_layer = int(cfg.get("num_hidden_layers") or cfg.get("n_layer") or 0)
    window, layers = _windows(cfg, fam, n_layer)
    out: dict[str, Any] = {"family": fam, "sliding_window": window, "window_layers": layers}
    out["rope_scaling"] = rope_scaling_of(cfg, SCALINGS)
    if fam == "qwen2":
        out.update(attn_bias=True, o_bias=False)
    elif fam == "qwen3":
        out.update(qk_norm="head", o_bias=bool(cfg.get("attention_bias")))
    elif fam == "olmo2":
        out.update(qk_norm="full", post_norms=True)
    elif fam == "granite":
        out.update(embedding_multiplier=float(cfg.get("embedding_multiplier", 1.0)),
                   residual_multiplier=float(cfg.get("residual_multiplier", 1.0)),
                   attention_multiplier=float(cfg.get("attention_multiplier", 1.0)),
                   logits_scaling=float(cfg.get("logits_scaling", 1.0)))
    elif fam == "smollm3":
        nr = cfg.get("no_rope_layers")
        if nr is None:
            every = int(cfg.get("no_rope_layer_interval") or 4)
            nr = [int((i + 1) % every != 0) for i in range(n_layer)]
        if len(nr) != n_layer:
            raise UserError(f"smollm3 config: no_rope_layers has {len(nr)} entries for {n_layer} layers")
        out["no_rope_layers"] = [int(x) for x in nr]
    return out


def family_hf(c: Any, base: dict) -> dict:
    """``base`` (the Llama config.json dict) rewritten as ``c.family``'s own config.json."""
    fam = c.family
    arch, mt = _HF_NAMES.get(fam, _HF_NAMES["llama"])
    out = {**base, "architectures": [arch], "model_type": mt}
    if fam != "llama":
        out.setdefault("pad_token_id", None)  # not the config class's default (SmolLM3's lies past a tiny vocab)
    if c.rope_scaling:
        out["rope_parameters"] = {**c.rope_scaling, "rope_theta": c.rope_theta}
        out["rope_scaling"] = dict(out["rope_parameters"])
    if fam == "qwen2":
        out["attention_bias"] = True  # not a Qwen2 key (its q/k/v always have biases); said for readers
    if fam in ("qwen2", "mistral", "olmo2", "qwen3"):
        out.pop("mlp_bias", None)
    if fam == "mistral":
        out["sliding_window"] = c.sliding_window
    if fam in ("qwen2", "qwen3", "smollm3"):
        out["use_sliding_window"] = c.sliding_window is not None
        out["sliding_window"] = c.sliding_window
        out["layer_types"] = ["sliding_attention" if c.sliding_window is not None and
                              (c.window_layers is None or i in c.window_layers) else "full_attention"
                              for i in range(c.n_layer)]
        out["max_window_layers"] = c.n_layer if c.sliding_window is None else min(c.window_layers or [0])
    if fam == "granite":
        out.update(embedding_multiplier=c.embedding_multiplier, residual_multiplier=c.residual_multiplier,
                   attention_multiplier=c.attention_multiplier, logits_scaling=c.logits_scaling)
    if fam == "smollm3":
        out["no_rope_layers"] = list(c.no_rope_layers or [1] * c.n_layer)
    return out
