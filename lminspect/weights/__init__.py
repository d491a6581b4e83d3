"""The weight store: safetensors, HF directories and GGUF behind one lazy TensorStore.

``open_store(ref)`` reads headers only; tensors are memmap views or converted per
tensor on access. ``naming`` maps every format's names to the canonical names of
docs/ARCHITECTURE.md; ``stats`` streams statistics; ``fetch``/``convert`` get and
convert the real SmolLM2 model.
"""

from __future__ import annotations

from lminspect.weights.open import open_hf_dir, open_store
from lminspect.weights.store import TensorInfo, TensorStore

__all__ = ["TensorInfo", "TensorStore", "open_hf_dir", "open_store"]
