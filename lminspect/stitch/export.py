"""Export a stitched model: one block per plan occurrence, branch scales folded into the weights.

The HF names and the directory writing are :mod:`lminspect.weights.export`; this module only
turns (model, plan) into the canonical state dict and config of the standalone stitched model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lminspect.models.layercall import LayerCall
from lminspect.stitch.grammar import plan_to_string
from lminspect.stitch.mergekit import MergekitPlan, cast_and_scale, source_name
from lminspect.stitch.plans import parse_plan
from lminspect.stitch.view import StitchedModel
from lminspect.weights import provenance
from lminspect.weights.export import hf_state_dict, model_family, write_hf_dir

if TYPE_CHECKING:  # annotations only
    from lminspect.models.common import LM


def stitched_state_dict(model: LM, plan: list[LayerCall]) -> dict[str, Any]:
    """The canonical state dict of the stitched model: one block per occurrence, scales folded.

    A branch scale ``s`` multiplies that branch's output before the residual add, which is
    exactly multiplying the branch's last projection (``attn.o``, ``mlp.down``: weight and bias) by ``s``.
    A head scale multiplies that head's output before ``attn.o``: its columns of ``attn.o.weight``
    (the bias belongs to no head and stays). A branch normed before the residual add (Gemma 2/3's
    ``attn_post_norm`` / ``mlp_post_norm``, OLMo 2's too) takes its scale in that norm's gain instead.
    """
    import torch

    sd = {k: v.detach() for k, v in model.state_dict().items()}
    out: dict[str, Any] = {k: v.clone() for k, v in sd.items() if not k.startswith("layers.")}
    for j, call in enumerate(plan):
        prefix = f"layers.{call.index}."
        block = model.layers[call.index]
        post = {"attn": getattr(block, "attn_post_norm", None), "mlp": getattr(block, "mlp_post_norm", None)}
        for k, v in sd.items():
            if not k.startswith(prefix):
                continue
            rest = k[len(prefix) :]
            t = v.clone()
            for branch, s in (("attn", call.attn_scale), ("mlp", call.mlp_scale)):
                if post[branch] is not None and s != 1.0 and rest.startswith(f"{branch}_post_norm."):
                    t = _scaled_gain(post[branch], rest.rpartition(".")[2], t, s)
            if rest == "attn.o.weight" and call.has_head_scales:  # head h owns o's columns h*hd..(h+1)*hd
                att = model.layers[call.index].attn
                f = torch.tensor(call.head_factors(att.n_head, att.n_kv_head), dtype=t.dtype)
                t = t * f.repeat_interleave(att.head_dim)[None, :]
            if rest.startswith("attn.o.") and call.attn_scale != 1.0 and post["attn"] is None:
                t = t * call.attn_scale
            elif rest.startswith("mlp.down.") and call.mlp_scale != 1.0 and post["mlp"] is None:
                t = t * call.mlp_scale
            out[f"layers.{j}.{rest}"] = t.contiguous()
    return out


def _scaled_gain(norm: Any, kind: str, t: Any, s: float) -> Any:
    """A norm's weight/bias such that its output is ``s`` times the original: ``(1 + w)`` gains
    (Gemma) become ``s (1 + w) - 1``, plain weights and biases ``s w``, ``s b``."""
    if kind == "weight" and getattr(norm, "unit_offset", False):
        return s * (1.0 + t) - 1.0
    return t * s


def _check_export_size(base: Any, plan: list[LayerCall], out_dir: str | Path) -> None:
    """Every occurrence is a copy: estimate the stitched model's bytes before building it
    (held in memory about twice while it is converted and written) and refuse what cannot fit."""
    from lminspect.limits import check_disk, check_memory

    per_layer: dict[int, int] = {}
    rest = 0
    for k, v in base.state_dict().items():
        nbytes = v.numel() * v.element_size()
        if k.startswith("layers."):
            i = int(k.split(".")[1])
            per_layer[i] = per_layer.get(i, 0) + nbytes
        else:
            rest += nbytes
    total = rest + sum(per_layer.get(c.index, 0) for c in plan)
    what = f"exporting {len(plan)} layer occurrences"
    check_memory(what, 2 * total)
    check_disk(what, total, Path(out_dir).parent)


def export_stitched(
    model: Any,
    plan: Any,
    out_dir: str | Path,
    *,
    tokenizer_json: str | None = None,
    extra_files: Mapping[str, str] | None = None,
    source: Mapping[str, Any] | None = None,
) -> Path:
    """Write a standalone HF directory of the stitched model (atomically).

    Families: llama (tied or untied head), gpt2, and falcon with ``new_decoder_architecture=false``
    (RW/ALiBi or rotary, classic or multi-query qkv, sequential or parallel attention; q/k/v
    fused back into ``query_key_value`` in HF's layout); anything else is a ``UserError`` and
    nothing is written. ``config.json`` gets ``num_hidden_layers`` (``n_layer`` for GPT-2) =
    ``len(plan)`` and ``lminspect_plan``; ``model.safetensors`` holds HF names with each
    occurrence's weights duplicated and its scales folded in; ``tokenizer.json`` is copied when given.
    A plan read from a mergekit config also gets mergekit's ``scale`` (every tensor of those
    layers), ``dtype`` and ``out_dtype``, as ``mergekit-yaml`` applies them. ``source`` is the
    model's source-quantization record (``weights.provenance``), carried over per tensor.
    """
    base = model.model if isinstance(model, StitchedModel) else model
    n = len(base.layers)
    plan = parse_plan(plan if plan is not None else getattr(model, "plan", None), n)
    cfg = base.config
    hf_cfg: dict[str, Any] = dict(cfg.to_hf() if hasattr(cfg, "to_hf") else cfg)
    arch = model_family(base, hf_cfg)
    _check_export_size(base, plan, out_dir)
    sd = stitched_state_dict(base, plan)
    tied = bool(hf_cfg.get("tie_word_embeddings", arch == "gpt2"))
    if tied:
        sd.pop("head.weight", None)
    hf_sd = hf_state_dict(arch, sd, hf_cfg)
    if isinstance(plan, MergekitPlan):  # mergekit's scale multiplies whole tensors, in its dtype
        hf_sd = {k: cast_and_scale(v, plan.tensor_scale(k), plan.dtype, plan.out_dtype) for k, v in hf_sd.items()}
        if plan.out_dtype or plan.dtype:
            hf_cfg["dtype"] = hf_cfg["torch_dtype"] = plan.out_dtype or plan.dtype
    for key in ("num_hidden_layers", "n_layer"):
        if key in hf_cfg or (key == "num_hidden_layers" and arch != "gpt2") or (key == "n_layer" and arch == "gpt2"):
            hf_cfg[key] = len(plan)
    for key in ("layer_types", "no_rope_layers"):  # per-layer settings follow their layer
        if isinstance(hf_cfg.get(key), list) and len(hf_cfg[key]) == n:
            hf_cfg[key] = [hf_cfg[key][c.index] for c in plan]
    if "max_window_layers" in hf_cfg and isinstance(hf_cfg.get("layer_types"), list):
        hf_cfg.pop("max_window_layers")  # layer_types says it per layer
    hf_cfg["lminspect_plan"] = plan_to_string(plan, n)
    hf_cfg["lminspect_source_layers"] = n
    meta = None
    if source:  # the values are still the quantized source's: keep saying so
        rec = dict(source)
        if isinstance(source.get("tensors"), Mapping):  # per tensor: output name -> its source tensor's type
            rec["tensors"] = {k: source["tensors"].get(source_name(k, plan)) for k in hf_sd}
        hf_cfg[provenance.KEY] = provenance.config_record(rec)
        meta = {provenance.KEY: json.dumps(rec)}
    return write_hf_dir(out_dir, hf_sd, hf_cfg, tokenizer_json=tokenizer_json, extra_files=extra_files,
                        metadata=meta)


def export_to_temp(model: LM, plan: Any, store: Any = None) -> Path:
    """Export ``model`` through ``plan`` into a new temp folder (with ``store``'s tokenizer files
    and source record when given); the caller removes ``path.parent`` when done."""
    import tempfile

    from lminspect.weights.export import tokenizer_side_files
    from lminspect.weights.provenance import source_record

    tmp = Path(tempfile.mkdtemp(prefix="lminspect-mergekit-"))
    tj = store.tokenizer_json() if store is not None else None
    side = tokenizer_side_files(store) if store is not None else None
    src = source_record(store) if store is not None else None
    return export_stitched(model, plan, tmp / "model", tokenizer_json=tj, extra_files=side, source=src)


def materialize(model: LM, plan: Any) -> tuple[Any, Any]:
    """(model, plan) ready to run: a plan whose mergekit ``scale`` multiplies weights cannot run
    over the shared weights, so the stitched model is exported to a temp folder and loaded
    (the plan becomes the full plan of that model); any other plan is returned as it is."""
    if not getattr(plan, "scales_weights", False):
        return model, plan
    import shutil

    from lminspect.models.layercall import full_plan
    from lminspect.models.open import reopen_like

    out = export_to_temp(model, plan)
    try:
        lm = reopen_like(model, out)
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    return lm, full_plan(len(plan))
