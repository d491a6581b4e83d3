"""Opening a model: the one place that puts a weight store, the engine and the tokenizer together.

Every face (CLI, TUI, REPL) and every library user opens through ``open_model``, so the weights
mode, the device and the thread setup are decided once (nanochat's ``load_model_from_dir`` is
the shape): ``store, model, tokenizer = open_model("smollm2", weights="auto")``. ``lazy=True``
reads headers only and builds the engine and the tokenizer on first use (the REPL's ``li.open``).
The pieces stay where they are (``weights.open_store``, ``models.load_model``,
``tokenizer.load_tokenizer``); this module only composes them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from lminspect.models.common import LM
    from lminspect.tokenizer import Tokenizer
    from lminspect.weights import TensorStore


@dataclass
class OpenedModel:
    """A store with the engine and tokenizer built from it (each on first use when lazy).
    Unpacks as ``store, model, tokenizer`` (tokenizer None when opened with ``tokenizer=False``)."""

    store: TensorStore
    dtype: str = "float32"  # the engine's dtype (--dtype)
    device: str = "cpu"  # where the engine lives (--device)
    weights: str | None = None  # --weights: None keeps dtype; auto/stored/float32/bfloat16 (models.stored)
    threads: int | None = None  # torch CPU threads applied when the engine is built (None: runtime's rule)
    with_tokenizer: bool = True  # whether unpacking builds the tokenizer
    _model: LM | None = field(default=None, repr=False)
    _tokenizer: Tokenizer | None = field(default=None, repr=False)

    @property
    def model(self) -> LM:
        """The engine (``models.load_model``), built once, after the thread setup."""
        if self._model is None:
            import torch

            from lminspect.models import load_model
            from lminspect.runtime import ensure_threads

            self.threads = ensure_threads(self.threads)
            # built outside inference mode even when first used inside one (the REPL's m.logits):
            # inference tensors would refuse the version checks of the packed weights and any training
            with torch.inference_mode(False):
                lm = load_model(self.store, dtype=self.dtype, device=self.device, weights=self.weights)
            lm.open_options = {"dtype": self.dtype, "device": self.device, "weights": self.weights}
            self._model = lm
        return self._model

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer (``tokenizer.load_tokenizer``); a UserError when the model has none."""
        if self._tokenizer is None:
            from lminspect.tokenizer import load_tokenizer

            self._tokenizer = load_tokenizer(self.store)
        return self._tokenizer

    @property
    def built(self) -> bool:
        """Whether the engine exists yet (a lazy open builds it on first use)."""
        return self._model is not None

    def __iter__(self) -> Iterator[Any]:
        tok = self.tokenizer if self.with_tokenizer else None  # first: a missing tokenizer fails before the slow load
        return iter((self.store, self.model, tok))


def open_model(ref: Any, *, dtype: str = "float32", device: str = "cpu", weights: str | None = None,
               threads: int | None = None, tokenizer: bool = True, lazy: bool = False) -> OpenedModel:
    """Open ``ref`` (anything ``weights.open_store`` takes, or an open store) as one model.

    ``weights`` as ``--weights`` (None keeps ``dtype``); ``threads`` as ``--threads`` (None: the
    count a command already set in this process, else ``runtime``'s default, the CLI's rule).
    Eager by default (tokenizer first, then the engine); ``lazy=True`` reads headers only."""
    from lminspect.runtime import ensure_threads

    if hasattr(ref, "get_canonical"):
        store = ref
    else:
        from lminspect.weights import open_store

        store = open_store(os.fspath(ref) if isinstance(ref, os.PathLike) else ref)
    opened = OpenedModel(store, dtype=str(dtype), device=str(device), weights=weights,
                         threads=ensure_threads(threads), with_tokenizer=tokenizer)
    if not lazy:
        if tokenizer:
            opened.tokenizer  # noqa: B018 - built now: a missing tokenizer fails before the slow load
        opened.model  # noqa: B018
    return opened


def reopen_like(model: LM, ref: Any) -> LM:
    """The engine of ``ref`` opened the way ``model`` was (dtype, device, weights mode): a mergekit
    plan that scales weights is run as an exported copy that must live where the original did."""
    opts = dict(getattr(model, "open_options", None) or {"dtype": str(getattr(model, "dtype", "float32"))})
    opts["dtype"] = str(opts.get("dtype", "float32")).removeprefix("torch.")
    device = getattr(model, "device", None)
    if device is not None:
        opts["device"] = str(device)
    return open_model(ref, tokenizer=False, **opts).model


__all__ = ["OpenedModel", "open_model", "reopen_like"]
