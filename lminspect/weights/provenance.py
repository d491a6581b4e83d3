"""Where a model's numbers come from: the quantization its weights were dequantized from.

``lminspect convert`` (and ``fetch smollm2``, which converts the Q4_1 GGUF) writes float
weights, but their values are still those of the quantized file: a Q4_1 block of 32 values
holds at most 16 distinct ones. So the conversion records its source, and every place that
shows a dtype says so: ``F32 (dequantized from Q4_1)``.

The record (``source_record``) is written twice: in ``config.json`` under
``lminspect_source`` (format, file, quantization, tensor_types) and, with the per-tensor
types, in the safetensors header metadata under the same key, as JSON (safetensors metadata
values are strings). The safetensors copy travels with a lone ``.safetensors`` file.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

KEY = "lminspect_source"
FLOAT_TYPES = frozenset({"F64", "F32", "F16", "BF16"})  # stored as-is, nothing to dequantize


def is_quantized(dtype: str | None) -> bool:
    """A GGUF block-quantized type (Q4_1, Q8_0, Q6_K, IQ2_XS, ...), not a float or int dtype."""
    return bool(dtype) and dtype not in FLOAT_TYPES and not dtype.startswith(("I", "U", "BOOL"))  # type: ignore[union-attr]


def gguf_record(store: Any, hf_names: dict[str, str]) -> dict[str, Any]:
    """The record for converting GGUF ``store``; ``hf_names`` maps its canonical names to the
    names written. ``quantization`` is the file's ``general.file_type`` (``MOSTLY_Q4_1`` ->
    ``Q4_1``) or else its most common quantized tensor type; None for a float-only file."""
    tensors = {hf: store.info(c).dtype for c, hf in hf_names.items()}
    types = Counter(tensors.values())
    quant = None
    ft = getattr(store, "gguf", None) and store.gguf.get_kv("general.file_type")
    if isinstance(ft, int):
        try:
            from gguf.constants import LlamaFileType

            name = LlamaFileType(ft).name
            quant = name.removeprefix("MOSTLY_") if name.startswith("MOSTLY_") else None
        except (ImportError, ValueError):
            quant = None
    if quant is None:
        quantized = [(n, t) for t, n in types.items() if is_quantized(t)]
        quant = max(quantized)[1] if quantized else None
    return {"format": "gguf", "file": store.path.name, "quantization": quant,
            "tensor_types": dict(types.most_common()), "tensors": tensors}


def config_record(record: dict[str, Any]) -> dict[str, Any]:
    """The record as config.json keeps it: without the per-tensor list."""
    return {k: v for k, v in record.items() if k != "tensors"}


def source_record(store: Any) -> dict[str, Any] | None:
    """What the conversion recorded (safetensors metadata first, then config.json), or None;
    parsed once per store."""
    cached = getattr(store, "_source_record", False)
    if cached is not False:
        return cached
    rec = _read_record(store)
    try:
        store._source_record = rec
    except AttributeError:
        pass
    return rec


def _read_record(store: Any) -> dict[str, Any] | None:
    meta = getattr(store, "metadata", None) or {}
    raw = meta.get(KEY)
    if isinstance(raw, str):
        try:
            rec = json.loads(raw)
        except ValueError:
            rec = None
        if isinstance(rec, dict):
            return rec
    rec = (getattr(store, "config", None) or {}).get(KEY)
    return rec if isinstance(rec, dict) else None


def source_quantization(store: Any) -> str | None:
    """The quantization the stored floats were dequantized from ("Q4_1"), or None."""
    rec = source_record(store)
    q = rec.get("quantization") if rec else None
    return q if isinstance(q, str) and q else None


def source_dtype(store: Any, name: str) -> str | None:
    """The type tensor ``name`` (own or canonical) had in the source file: per tensor when the
    record lists them, else the record's overall quantization for matrices (GGUF stores 1-D
    tensors as floats); None when nothing is recorded."""
    rec = source_record(store)
    if not rec:
        return None
    tensors = rec.get("tensors")
    if isinstance(tensors, dict):
        t = tensors.get(store.info(name).name)
    else:  # only the config's record (a folder re-saved by transformers): GGUF keeps 1-D tensors float
        t = rec.get("quantization") if len(store.info(name).shape) >= 2 else None
    return t if isinstance(t, str) else None


def dtype_label(store: Any, name: str) -> str:
    """A tensor's dtype as shown: ``F32 (dequantized from Q4_1)`` when its source was quantized
    (SmolLM2's norms were F32 and its embedding Q8_0: those say F32 and F32 (... Q8_0))."""
    dtype = store.info(name).dtype
    src = source_dtype(store, name)
    return f"{dtype} (dequantized from {src})" if is_quantized(src) else dtype


def model_dtype_label(store: Any) -> str:
    """The model's dtype(s) as shown: ``F32 (dequantized from Q4_1)``, ``BF16``, ``Q4_1/F32``."""
    types = Counter(i.dtype for i in store.infos())
    stored = "/".join(t for t, _ in types.most_common()) or "-"
    q = source_quantization(store)
    return f"{stored} (dequantized from {q})" if q else stored
