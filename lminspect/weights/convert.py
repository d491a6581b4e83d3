"""GGUF -> HF-style model directory that lminspect and HF transformers both load.

Output: ``config.json`` (synthesised from GGUF metadata), ``model.safetensors`` (HF llama
names, dequantized, Q/K un-permuted to HF's rotary layout, float32 by default),
``tokenizer.json`` (built from the GGUF vocabulary and merges), ``tokenizer_config.json``
(special tokens), ``chat_template.jinja`` (as transformers 5 saves it) and
``generation_config.json``. The source's quantization is recorded (``provenance``): in
config.json and the safetensors metadata under ``lminspect_source``. The directory is built
under a temp name and renamed into place (``fsutil.atomic_dir``): never half-written.
Tensors are streamed one at a time, so memory stays at one tensor.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lminspect.errors import UserError
from lminspect.fsutil import atomic_dir
from lminspect.weights.naming import LLAMA_HF
from lminspect.weights.provenance import KEY as SOURCE_KEY
from lminspect.weights.provenance import config_record, gguf_record

DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def _cast(a: np.ndarray, dtype: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if dtype == "float32":
        return a
    if dtype == "float16":
        return a.astype(np.float16)
    import torch  # round-to-nearest-even bf16, stored as its uint16 bits

    return torch.from_numpy(np.ascontiguousarray(a)).bfloat16().view(torch.int16).numpy().view(np.uint16)


def convert_gguf(src: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, dtype: str = "float32",
                 progress: Callable[[int, int], None] | None = None) -> Path:
    """Convert a llama GGUF file into a HF-style directory at ``out_dir``; return the path.

    ``progress(done, total)`` after each tensor is written."""
    from lminspect.weights.export import tokenizer_side_files
    from lminspect.weights.families import check_family
    from lminspect.weights.gguf_format import open_gguf, tokenizer_json
    from lminspect.weights.safetensors_format import write_safetensors_lazy

    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    store = open_gguf(src)
    if store.arch != "llama":
        raise UserError(f"{src}: only llama-architecture GGUF files can be converted (found {store.arch})")
    g = store.gguf  # type: ignore[attr-defined]
    cfg = dict(store.config)
    check_family(cfg, str(src))  # nothing the engine would refuse becomes a plain-looking HF dir
    if (cfg.get("rope_parameters") or {}).get("rope_type") == "freq_factors":
        raise UserError(f"{src}: its RoPE comes from a rope_freqs table, which a transformers config cannot hold")
    cfg.pop("gguf:architecture", None)
    cfg["torch_dtype"] = dtype
    cfg["dtype"] = dtype
    items = []
    hf_names = {}
    for cname in store.canonical_names():
        if cname == "head.weight" and cfg.get("tie_word_embeddings"):
            continue
        shape = store.info(cname).shape
        hf_names[cname] = LLAMA_HF.to_hf(cname)
        items.append((hf_names[cname], DTYPES[dtype], shape, lambda c=cname: _cast(store.get_canonical(c), dtype)))
    if progress is not None:  # each tensor is made just before it is written: count the makes
        items = [(name, dt, shape, _counted(make, k, len(items), progress))
                 for k, (name, dt, shape, make) in enumerate(items)]
    record = gguf_record(store, hf_names)  # the numbers are the quantized file's: say so
    cfg[SOURCE_KEY] = config_record(record)
    gen = {k: cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in cfg}
    out = Path(out_dir)
    width = {"F32": 4, "F16": 2, "BF16": 2}[DTYPES[dtype]]
    need = sum(int(np.prod(shape)) * width for _, _, shape, _ in items)  # for a full disk's one line
    with atomic_dir(out, need=need) as tmp:
        write_safetensors_lazy(tmp / "model.safetensors", items,
                               {"format": "pt", "source": Path(src).name, SOURCE_KEY: json.dumps(record)})
        if progress is not None:
            progress(len(items), len(items))
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
        tj = tokenizer_json(g)
        if tj is not None:
            (tmp / "tokenizer.json").write_text(tj, encoding="utf-8")
            for fname, text in tokenizer_side_files(store).items():  # chat template in chat_template.jinja
                (tmp / fname).write_text(text, encoding="utf-8")
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n", encoding="utf-8")
    return out


def _counted(make: Callable[[], Any], k: int, total: int, progress: Callable[[int, int], None]) -> Callable[[], Any]:
    """``make`` that reports tensor ``k`` (0-based) of ``total`` as started."""
    def run() -> Any:
        progress(k, total)
        return make()

    return run
