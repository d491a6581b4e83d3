"""Growing while training: the :class:`GrowthController` behind the ``growing`` experiment.

A schedule is a list of growth events keyed by training tokens::

    {"old_lr_scale": 0.5,
     "events": [{"tokens": 20000, "layers": 2},
                {"tokens": 60000, "width": 128, "ffn": 384}]}

(a bare list of events is accepted too). ``lminspect train --exp growing --set schedule=FILE.json``
(or the JSON inline) trains the base model (``--set base=llamaish|gpt2ish``, other ``--set`` keys
go to it) and, after the first optimizer step at or past each event's token count, replaces the
model by its function-preserving growth (:func:`lminspect.grow.grow_model`).

- **Optimizer state** is carried: every element that existed before keeps its moments
  (Adam ``exp_avg``/``exp_avg_sq``/``step``, Adagrad ``sum``), new elements start at zero.
- **Generations / param groups**: a parameter tensor belongs to the generation that created it or
  last changed its shape (0 = the initial model). The optimizer has one param group per
  generation with ``lr = base_lr * old_lr_scale ** (current - generation)``, so with
  ``old_lr_scale < 1`` older, already-trained tensors learn more slowly (building babel's plan);
  an event may set its own ``old_lr_scale``. Width growth reshapes almost every tensor, so it
  starts a new generation for nearly all of them; depth growth leaves old blocks old.
- **Resume**: the train state counts applied events; on ``--resume`` the controller replays the
  events' shapes on the freshly built model before the checkpoint is loaded.

Not supported with ``--compile`` or several processes (the modules are replaced mid-run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lminspect.errors import UserError
from lminspect.grow.core import GrowSpec, grow_model


def load_schedule(schedule: Any) -> tuple[list[dict[str, Any]], float]:
    """(events sorted by tokens, default old_lr_scale) from a list, dict, JSON text or file path."""
    if schedule is None:
        return [], 1.0
    if isinstance(schedule, str):
        p = Path(schedule)
        text = p.read_text(encoding="utf-8") if p.is_file() else schedule
        try:
            schedule = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"growth schedule {str(schedule)[:60]!r}: not a JSON file or JSON text ({e})") from e
    scale = 1.0
    if isinstance(schedule, dict):
        scale = float(schedule.get("old_lr_scale", 1.0))
        schedule = schedule.get("events", [])
    if not isinstance(schedule, list):
        raise UserError("growth schedule: expected a list of events or {\"events\": [...]}")
    events = []
    for i, ev in enumerate(schedule):
        if not isinstance(ev, dict) or "tokens" not in ev:
            raise UserError(f"growth schedule event {i}: expected an object with \"tokens\"")
        GrowSpec.from_dict(ev)  # validates keys
        events.append(dict(ev))
    events.sort(key=lambda e: int(e["tokens"]))
    return events, scale


class GrowthController:
    """Applies a schedule to a training model; the loop finds it as ``model.lminspect_growth``."""

    def __init__(self, events: list[dict[str, Any]], old_lr_scale: float = 1.0, seed: int = 0) -> None:
        self.events = events
        self.old_lr_scale = old_lr_scale
        self.seed = seed
        self.applied = 0
        self.generation: dict[str, int] = {}
        self.scales: list[float] = []  # old_lr_scale used at each applied event

    # ---- param groups
    def _gen(self, name: str) -> int:
        return self.generation.get(name, 0)

    def param_groups(self, model: Any, lr: float) -> list[dict[str, Any]]:
        """One group per generation, newest first (so ``param_groups[0]['lr']`` is the base lr)."""
        by_gen: dict[int, list[Any]] = {}
        for name, p in model.named_parameters():
            if p.requires_grad:
                by_gen.setdefault(self._gen(name), []).append(p)
        groups = []
        for g in sorted(by_gen, reverse=True):
            factor = 1.0
            for s in self.scales[g:]:
                factor *= s
            groups.append({"params": by_gen[g], "lr": lr * factor, "generation": g})
        return groups

    # ---- growth
    def due(self, tokens: int) -> bool:
        return self.applied < len(self.events) and tokens >= int(self.events[self.applied]["tokens"])

    def _apply(self, model: Any) -> tuple[Any, Any]:
        ev = self.events[self.applied]
        old_shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
        new, pmap = grow_model(model, ev, seed=self.seed + self.applied + 1)
        self.applied += 1
        gen = {}
        for name, p in new.named_parameters():
            src, _ = pmap.sources.get(name, (None, []))
            if src is None or old_shapes.get(src) != tuple(p.shape):
                gen[name] = self.applied
            else:
                gen[name] = self._gen(src)
        self.generation = gen
        self.scales.append(float(ev.get("old_lr_scale", ev.get("lr_scale", self.old_lr_scale))))
        return new, pmap

    def grow(self, model: Any, optimizer: Any, make_optimizer: Any, lr: float,
             probe: tuple[Any, Any] | None = None) -> tuple[Any, Any, dict[str, Any]]:
        """Grow ``model`` now: (new model, new optimizer with carried state, stats for the row)."""
        import torch
        import torch.nn.functional as F

        def probe_loss(m: Any) -> float | None:
            if probe is None:
                return None
            was = m.training
            m.eval()
            with torch.no_grad():
                logits = m(probe[0]).float()
                loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), probe[1].reshape(-1)).item()
            m.train(was)
            return loss

        before = probe_loss(model)
        old_params = dict(model.named_parameters())
        new, pmap = self._apply(model)
        new.train(model.training)
        new_opt = make_optimizer(self.param_groups(new, lr))
        for name, p in new.named_parameters():
            src, _ = pmap.sources.get(name, (None, []))
            old_p = old_params.get(src) if src is not None else None
            st = optimizer.state.get(old_p) if old_p is not None else None
            if st:
                new_opt.state[p] = {k: (pmap.carry(name, p, v) if isinstance(v, torch.Tensor) else v)
                                    for k, v in st.items()}
        after = probe_loss(new)
        row = {"growth": self.applied, "n_params": sum(p.numel() for p in new.parameters())}
        if before is not None:
            row.update(growth_loss_before=before, growth_loss_after=after)
        return new, new_opt, row

    def replay(self, model: Any, n: int) -> Any:
        """Shapes (and generations) after the first ``n`` events, for ``--resume``."""
        self.applied, self.generation, self.scales = 0, {}, []
        for _ in range(min(n, len(self.events))):
            model, _ = self._apply(model)
        return model
