"""The one model engine: small torch modules per family, built from a TensorStore.

``load_model(store_or_ref)`` reads ``store.config`` and the canonical tensors (no transformers);
``Llama`` / ``GPT2`` / ``Falcon`` with their config dataclasses construct random models for
training. See docs/engine.md for forward / plans / caches / hooks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from lminspect import lazy_exports
from lminspect.errors import UserError

# The modules (and torch) load on first use (PEP 562): ``lminspect.models.layercall`` is plain
# data, so a plan can be parsed and checked before torch is imported.
_HOME = {
    "LM": "common", "MLP": "common", "Attention": "common", "Block": "common", "KVCache": "common",
    "RMSNorm": "common", "Falcon": "falcon", "FalconConfig": "falcon", "Gemma": "gemma", "GemmaConfig": "gemma",
    "GPT2": "gpt2", "GPT2Config": "gpt2", "SITE_KINDS": "hooks", "LayerCall": "layercall", "full_plan": "layercall",
    "Llama": "llama", "LlamaConfig": "llama", "GPTNeoX": "neox", "GPTNeoXConfig": "neox", "StableLM": "neox",
    "StableLMConfig": "neox", "Phi3": "phi3", "Phi3Config": "phi3",
}

if TYPE_CHECKING:
    from lminspect.models.common import LM, MLP, Attention, Block, KVCache, RMSNorm
    from lminspect.models.falcon import Falcon, FalconConfig
    from lminspect.models.gemma import Gemma, GemmaConfig
    from lminspect.models.gpt2 import GPT2, GPT2Config
    from lminspect.models.hooks import SITE_KINDS
    from lminspect.models.layercall import LayerCall, full_plan
    from lminspect.models.llama import Llama, LlamaConfig
    from lminspect.models.neox import GPTNeoX, GPTNeoXConfig, StableLM, StableLMConfig
    from lminspect.models.phi3 import Phi3, Phi3Config


def _families() -> dict[str, tuple[type, type]]:
    """The engine of each family: ``{name: (model class, config dataclass)}`` (``FAMILIES``)."""
    from lminspect.models.falcon import Falcon, FalconConfig
    from lminspect.models.gemma import Gemma, GemmaConfig
    from lminspect.models.gpt2 import GPT2, GPT2Config
    from lminspect.models.llama import Llama, LlamaConfig
    from lminspect.models.neox import GPTNeoX, GPTNeoXConfig, StableLM, StableLMConfig
    from lminspect.models.phi3 import Phi3, Phi3Config

    return {
        "llama": (Llama, LlamaConfig),
        "gpt2": (GPT2, GPT2Config),
        "falcon": (Falcon, FalconConfig),
        "gemma": (Gemma, GemmaConfig),  # Gemma 1, 2 and 3 (text)
        "phi3": (Phi3, Phi3Config),
        "gptneox": (GPTNeoX, GPTNeoXConfig),
        "stablelm": (StableLM, StableLMConfig),
    }


__getattr__, __dir__ = lazy_exports(__name__, {name: f"lminspect.models.{home}" for name, home in _HOME.items()},
                                     {"FAMILIES": _families})


_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}


def family_spec(config: dict, hint: str | None = None, where: str = "model config") -> Any:
    """The ``FamilySpec`` (weights/families.py) of a HF-style config, checked: a family lminspect
    does not run, or a config key whose math the engine does not implement, is a one-line
    ``UserError`` naming ``where``. ``hint`` (a store's arch) counts only when the config names no
    family at all."""
    from lminspect.weights.families import check_family, spec_named

    cfg = dict(config or {})
    if hint and not (cfg.get("lminspect_arch") or cfg.get("model_type") or cfg.get("architectures")):
        spec = spec_named(hint)
        if spec is not None:
            cfg["model_type"] = spec.model_types[0]
    return check_family(cfg, where)


def arch_of(config: dict, hint: str | None = None, where: str = "model config") -> str:
    """The engine (a key of ``FAMILIES``) that runs a HF-style config; see :func:`family_spec`."""
    return family_spec(config, hint, where).engine


def config_from_hf(config: dict, arch: str | None = None) -> Any:
    """The family config dataclass for a HF-style config dict (checked: see models/checks.py)."""
    from lminspect.models.checks import config_from_dict

    return config_from_dict(__getattr__("FAMILIES")[arch_of(config, arch)][1], config, "model config")


def build_model(config: Any) -> LM:
    """A randomly initialised model for a family config dataclass."""
    from lminspect.models.checks import check_config

    for model_cls, cfg_cls in __getattr__("FAMILIES").values():
        if isinstance(config, cfg_cls):
            check_config(config, "model config")
            return model_cls(config)
    raise UserError(f"not a model config: {type(config).__name__}")


def _torch_dtype(dtype: Any):
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPES.get(str(dtype).removeprefix("torch."))
    if name is None:
        raise UserError(f"unsupported dtype {dtype!r} (expected float32, bfloat16 or float16)")
    return getattr(torch, name)


def add_value_norm(model: LM) -> LM:
    """lmplay's value norm: a LayerNorm on every block's value projection output.

    Checkpoints of such models say ``"lminspect_value_norm": true`` in config.json and carry
    ``layers.N.attn.v_norm.*``; ``load_model`` adds the norms before loading them.
    """
    from torch import nn

    for block in model.layers:
        block.attn.v_norm = nn.LayerNorm(block.attn.v.out_features, eps=model.config.norm_eps)
    return model


def load_model(store_or_ref: Any, dtype: Any = "float32", device: str = "cpu", weights: str | None = None) -> LM:
    """Build the model a TensorStore (or anything ``open_store`` accepts) describes.

    ``weights`` (``--weights``): None keeps ``dtype``; ``stored`` / ``auto`` / ``float32`` /
    ``bfloat16`` as ``models.stored.resolve_weights`` says. ``stored`` (auto's choice on CPU) is
    a float32-activation model whose matrices stay in the file's form (models/stored.py): no
    whole-model float32 copy is made.

    Parameters are created on the meta device and then *assigned*: a tensor stored in the
    dtype asked for (float32, or bfloat16 / float16 bits) is a view of the memory-mapped file
    (copy-on-write: an edit touches private pages, never the file); others are converted one
    tensor at a time. The memory check counts only those copies and the per-layer buffers.
    Missing tensors or wrong shapes are a ``UserError`` naming the tensor and the expected shape.
    """
    import numpy as np
    import torch

    from lminspect.models.checks import config_from_dict

    store = store_or_ref
    if not hasattr(store, "get_canonical"):
        from lminspect.weights import open_store

        store = open_store(store_or_ref)
    mode = None
    if weights is not None:
        from lminspect.models.stored import resolve_weights

        mode = resolve_weights(weights, str(dtype).removeprefix("torch."), str(device))
        dtype = "float32" if mode == "stored" else mode
    tdtype = _torch_dtype(dtype)
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise UserError(f"bad device {device!r} (expected cpu or cuda)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but no CUDA GPU is available (hint: --device cpu)")
    config = dict(store.config or {})
    name = getattr(store, "name", None) or str(getattr(store, "path", "model"))
    arch = arch_of(config, getattr(store, "arch", None), str(getattr(store, "path", None) or name))
    model_cls, cfg_cls = __getattr__("FAMILIES")[arch]
    cfg = config_from_dict(cfg_cls, config, f"{name}: config")
    with torch.device("meta"), _no_meta_init():
        model = model_cls(cfg)
        if config.get("lminspect_value_norm"):
            add_value_norm(model)
    model._make_buffers()
    expected = {pname: tuple(p.shape) for pname, p in model.state_dict().items()}
    _check_fits(model, store, name, mode == "stored", tdtype.itemsize, dev.type)
    from lminspect.models.stored import attach_stored, in_place_tensor

    taken: set[str] = set()
    if mode == "stored":
        taken, _ = attach_stored(model, store)
    state = {}
    available = set(store.canonical_names()) if hasattr(store, "canonical_names") else None
    for pname, shape in expected.items():
        if pname in taken:
            continue
        if available is not None and pname not in available:
            raise UserError(f"{name}: missing tensor {pname} (expected shape {shape})")
        t = in_place_tensor(store, pname, tdtype) if tdtype != torch.float32 and dev.type == "cpu" else None
        if t is None:
            try:
                arr = store.get_canonical(pname)
            except (KeyError, LookupError) as e:
                raise UserError(f"{name}: missing tensor {pname} (expected shape {shape})") from e
            if arr is None:
                raise UserError(f"{name}: missing tensor {pname} (expected shape {shape})")
            if isinstance(arr, np.ndarray):
                if not arr.flags.writeable:
                    arr = np.array(arr)
                t = torch.from_numpy(arr)
            else:
                t = torch.as_tensor(arr)
        if tuple(t.shape) != shape:
            raise UserError(f"{name}: tensor {pname} has shape {tuple(t.shape)}, expected {shape}")
        state[pname] = t.to(device=dev, dtype=tdtype)
    model.load_state_dict(state, assign=True)
    model.to(dev)
    model.eval()
    model.source = name
    if mode != "stored":
        model.weights_label = str(tdtype).removeprefix("torch.")
    return model


@contextlib.contextmanager
def _no_meta_init() -> Iterator[None]:
    """torch's layers skip their random init while built on the meta device: load_model assigns
    the file's tensors anyway, and ``normal_`` on meta imports torch._dynamo (2-8 s here)."""
    from torch import nn

    saved = {cls: cls.reset_parameters for cls in (nn.Linear, nn.Embedding, nn.LayerNorm)}

    def skip(orig: Any) -> Any:
        return lambda self: None if self.weight is None or self.weight.is_meta else orig(self)

    for cls, orig in saved.items():
        cls.reset_parameters = skip(orig)
    try:
        yield
    finally:
        for cls, orig in saved.items():
            cls.reset_parameters = orig


def _check_fits(model: LM, store: Any, name: str, stored: bool, itemsize: int, device: str) -> None:
    """Refuse a load whose copies and buffers would not fit in memory (the mapped file is not counted)."""
    from lminspect import limits
    from lminspect.fsutil import human_bytes

    if device != "cpu":  # the GPU's own allocator reports that
        return
    if hasattr(store, "info") and hasattr(store, "canonical_source"):
        from lminspect.models.stored import load_estimate

        copies, working = load_estimate(model, store, stored, itemsize)
    else:
        copies, working = sum(p.numel() for p in model.state_dict().values()) * itemsize, 0
    mapped = int(getattr(store, "total_bytes", 0) or 0)
    limits.check_memory(
        f"{name}: loading the model ({human_bytes(copies)} of converted weights + {human_bytes(working)} "
        f"of per-layer buffers; its {human_bytes(mapped)} file stays memory-mapped, shared and evictable)",
        copies + working)


__all__ = [
    "FAMILIES", "LM", "SITE_KINDS", "add_value_norm", "Attention", "Block", "Falcon", "FalconConfig", "GPT2", "GPT2Config",
    "KVCache", "LayerCall", "Llama", "LlamaConfig", "MLP", "RMSNorm", "arch_of", "build_model",
    "config_from_hf", "family_spec", "full_plan", "load_model", "Gemma", "GemmaConfig", "GPTNeoX", "GPTNeoXConfig",
    "StableLM", "StableLMConfig", "Phi3", "Phi3Config",
]
