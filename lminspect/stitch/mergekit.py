"""mergekit passthrough configs, read with mergekit's meaning (mergekit 0.1.x ``config.py``,
``plan.py``, ``parameter_resolver.py``, ``merge_methods/passthrough.py``).

What a config means in mergekit, and so here:

* ``slices: [{sources: [{model, layer_range: [a, b]}]}]``: the output's layers are each
  slice's source layers a..b-1 (**half-open**), slice after slice. ``merge_method:
  passthrough`` with ``models: [{model}]`` and no slices is the whole model, copied.
* ``parameters: {scale: X}`` on a source, a slice or the top level multiplies **every tensor**
  the layers of that slice produce (q/k/v/o, MLP, norms) by X; the first slice's settings
  also apply to the embedding and the last slice's to the final norm and head (mergekit
  plans those with the first and last slice). The most specific setting wins: source, then
  slice, then top level; a setting that resolves to nothing (no filter matched) falls through.
* A setting is a number; a list of numbers, a gradient interpolated over the slice's layers
  (t = i/(n-1), t = 1 for a one-layer slice, t = 0 for embedding/norm/head); or a list of
  ``{filter, value}`` conditions, the first whose filter is a substring of the tensor's name
  (the **source** tensor's HF name, e.g. ``model.layers.5.self_attn.o_proj.weight``) or is
  missing / ``*`` giving the value.
* ``dtype`` (the dtype tensors are scaled in) and ``out_dtype`` (written) are honoured by
  ``stitch export``. Other keys (``tokenizer_source``, ``chat_template``, other merge
  methods...) are named in one warning line each; other merge methods are an error.

lminspect's own per-slice keys stay lminspect's (not mergekit's): ``attn_scale`` /
``mlp_scale`` (scale a residual branch's output, as the ``*0.5`` grammar does), ``repeat``,
``head_scale``, ``kv_head_scale``.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lminspect.errors import UserError
from lminspect.models.layercall import LayerCall

Settings = tuple[Mapping[str, Any], ...]  # parameter dicts, most specific first

# keys mergekit defines that a passthrough stitch has no use for: named, then ignored
_IGNORED_TOP = ("base_model", "tokenizer_source", "tokenizer", "chat_template", "modules", "name")
_KNOWN_TOP = {"merge_method", "slices", "models", "parameters", "dtype", "out_dtype", "plan", "layers",
              *_IGNORED_TOP}
_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "half": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}
_LAYER_RE = re.compile(r"\.(layers|h)\.(\d+)\.")


@dataclass(frozen=True)
class Occurrence:
    """Where one output layer's mergekit parameters come from."""

    settings: Settings
    t: float


class MergekitPlan(list):
    """A ``list[LayerCall]`` read from a mergekit config, carrying what a plain plan cannot:
    the per-tensor ``scale`` settings of every occurrence (``occurrences``), of the embedding
    (``pre``) and of the final norm and head (``post``), the dtypes, and the model names."""

    def __init__(self, calls: list[LayerCall], occurrences: list[Occurrence], pre: Occurrence, post: Occurrence,
                 dtype: str | None, out_dtype: str | None, models: list[str], where: str) -> None:
        super().__init__(calls)
        self.occurrences = occurrences
        self.pre, self.post = pre, post
        self.dtype, self.out_dtype = dtype, out_dtype
        self.models = models
        self.where = where

    @property
    def scales_weights(self) -> bool:
        """Whether any ``scale`` is set at all (a plan that only picks layers does not)."""
        return any("scale" in d for occ in (*self.occurrences, self.pre, self.post) for d in occ.settings)

    def tensor_scale(self, output_name: str) -> float | None:
        """The scale mergekit applies to output tensor ``output_name`` (HF name); None = none.
        Layer tensors use their occurrence's settings and the source layer's name for filters."""
        m = _LAYER_RE.search(output_name)
        if m is None:
            embed = any(k in output_name for k in ("embed", "wte", "wpe", "word_embeddings"))
            occ = self.pre if embed else self.post
        else:
            occ = self.occurrences[int(m.group(2))]
        return resolve_scale(occ.settings, source_name(output_name, self), occ.t, self.where)


def source_name(output_name: str, plan: list[LayerCall]) -> str:
    """The source model's HF name of an exported tensor: output layer j is source layer
    ``plan[j].index`` (``model.layers.3.mlp.up_proj.weight`` -> ``model.layers.5...``)."""
    m = _LAYER_RE.search(output_name)
    if m is None:
        return output_name
    src = plan[int(m.group(2))].index
    return output_name[: m.start()] + f".{m.group(1)}.{src}." + output_name[m.end():]


def resolve_scale(settings: Settings, tensor_name: str, t: float, where: str) -> float | None:
    """mergekit's ``resolve_parameter`` for ``scale``: the first setting that resolves wins."""
    for d in settings:
        if "scale" in d:
            v = _evaluate(d["scale"], tensor_name, t, where)
            if v is not None:
                return v
    return None


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise UserError(f"{where}: scale must be a number, a list of numbers or a list of {{filter, value}}")
    try:
        return float(v)
    except ValueError:
        raise UserError(f"{where}: scale {v!r} is not a number") from None


def _evaluate(setting: Any, tensor_name: str, t: float, where: str) -> float | None:
    """mergekit's ``evaluate_setting`` for a float parameter."""
    if isinstance(setting, Mapping):
        setting = [setting]
    if not isinstance(setting, list):
        return _number(setting, where)
    if not setting:
        return None
    if all(not isinstance(e, Mapping) for e in setting):  # a gradient over the slice's layers
        values = [_number(e, where) for e in setting]
        scaled = t * (len(values) - 1)
        i0 = int(scaled)
        i1 = min(len(values) - 1, i0 + 1)
        frac = scaled - i0
        return (1 - frac) * values[i0] + frac * values[i1]
    for cond in setting:
        if not isinstance(cond, Mapping) or "value" not in cond:
            raise UserError(f"{where}: scale conditions need a 'value' (and an optional 'filter')")
        flt = cond.get("filter")
        if flt is None or flt == "*" or (tensor_name and str(flt) in tensor_name):
            return _evaluate(cond["value"], tensor_name, t, where)
    return None


def _params(d: Mapping[str, Any]) -> dict[str, Any]:
    """A source's or slice's mergekit parameters; a bare ``scale`` beside ``layer_range`` (the
    short form) counts as one too."""
    p = d.get("parameters") or {}
    if not isinstance(p, Mapping):
        raise UserError("'parameters' must be a mapping")
    out = dict(p)
    if "scale" in d and "scale" not in out:
        out["scale"] = d["scale"]
    return out


def warn(message: str) -> None:
    print(f"lminspect: warning: {message}", file=sys.stderr)


def check_top(obj: Mapping[str, Any], where: str) -> tuple[str | None, str | None]:
    """Validate the top-level keys; return (dtype, out_dtype). Unsupported keys: a warning each."""
    method = obj.get("merge_method", "passthrough")
    if str(method).lower() != "passthrough":
        raise UserError(f"{where}: merge_method {method!r} is not supported; lminspect stitches with "
                        "passthrough only (layers copied, optionally scaled)")
    for key in obj:
        if key in _IGNORED_TOP:
            warn(f"{where}: mergekit key '{key}' is not supported by lminspect; ignored")
        elif key not in _KNOWN_TOP:
            warn(f"{where}: unknown key '{key}'; ignored")
    if obj.get("slices") and obj.get("models"):
        raise UserError(f"{where}: give either 'slices' or 'models', not both (as mergekit requires)")
    dtypes = []
    for key in ("dtype", "out_dtype"):
        v = obj.get(key)
        if v is not None and str(v).lower() not in _DTYPES:
            raise UserError(f"{where}: {key} {v!r}: choose one of float32, float16, bfloat16")
        dtypes.append(_DTYPES[str(v).lower()] if v is not None else None)
    return dtypes[0], dtypes[1]


def models_as_slices(models: Any, n_layers: int, where: str) -> list[dict[str, Any]]:
    """``models: [{model, parameters}]`` (passthrough: exactly one) -> the equivalent slice."""
    if not isinstance(models, list) or len(models) != 1 or not isinstance(models[0], Mapping):
        n = len(models) if isinstance(models, list) else "?"
        raise UserError(f"{where}: passthrough with 'models' takes exactly one model (got {n})")
    m = models[0]
    return [{"sources": [{"model": m.get("model"), "layer_range": [0, n_layers],
                          "parameters": m.get("parameters") or {}}]}]


def check_scale(setting: Any, where: str) -> None:
    """Every value a ``scale`` setting can take, checked when the plan is read (not only for the
    tensors its filters reach at export): ``scale: abc`` or ``.nan`` is one line, never dropped."""
    import math

    if isinstance(setting, Mapping):
        setting = [setting]
    if not isinstance(setting, list):
        if not math.isfinite(_number(setting, where)):
            raise UserError(f"{where}: scale {setting!r} is not a finite number")
        return
    for e in setting:
        if isinstance(e, Mapping):
            if "value" not in e:
                raise UserError(f"{where}: scale conditions need a 'value' (and an optional 'filter')")
            check_scale(e["value"], where)
        else:
            check_scale(e, where)


def slice_occurrences(src: Mapping[str, Any], sl: Mapping[str, Any], top: Mapping[str, Any],
                      n: int, where: str = "plan") -> list[Occurrence]:
    """The parameter settings of each of a slice's ``n`` layers, with mergekit's gradient t."""
    settings = (_params(src), _params(sl) if sl is not src else {}, top)
    for d in settings:
        if isinstance(d, Mapping) and "scale" in d:
            check_scale(d["scale"], where)
    return [Occurrence(settings, i / (n - 1) if n > 1 else 1.0) for i in range(n)]


def same_model(named: str, model_ref: str, store_path: Any) -> bool:
    """Whether a config's ``model:`` names the model given on the command line."""
    from pathlib import Path

    if named == model_ref:
        return True
    try:
        return Path(named).expanduser().resolve() == Path(str(store_path)).resolve()
    except (OSError, ValueError):
        return False


def warn_model_mismatch(plan: Any, model_ref: str, store: Any) -> None:
    """A warning line when a mergekit plan names another model than the one being stitched."""
    for named in getattr(plan, "models", None) or []:
        if not same_model(named, model_ref, getattr(store, "path", "")):
            warn(f"{plan.where} names model '{named}', but the model given is '{model_ref}'; "
                 f"stitching '{model_ref}'")


def cast_and_scale(t: Any, scale: float | None, dtype: str | None, out_dtype: str | None) -> Any:
    """mergekit's order: load in ``dtype``, multiply by ``scale``, write in ``out_dtype``."""
    import torch

    if dtype is not None:
        t = t.to(getattr(torch, dtype))
    if scale is not None and not (isinstance(scale, float) and math.isnan(scale)):
        t = t * scale
    if out_dtype is not None:
        t = t.to(getattr(torch, out_dtype))
    return t
