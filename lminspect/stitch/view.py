"""A model seen through a plan (:class:`StitchedModel`): same weights, different layer sequence."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lminspect.models.layercall import LayerCall
from lminspect.stitch.grammar import plan_to_string
from lminspect.stitch.plans import parse_plan
from lminspect.stitch.summary import PlanSummary, describe_plan

if TYPE_CHECKING:  # annotations only
    from lminspect.models.common import LM


class StitchedModel:
    """A model seen through a plan: same weights, different layer sequence.

    Everything the engine's LM offers is forwarded; ``forward``, ``new_cache`` and
    ``run_with_cache`` pass the plan. Cheap to make: nothing is copied.
    """

    def __init__(self, model: LM, plan: Any = None) -> None:
        self.model = model
        self.plan: list[LayerCall] = parse_plan(plan, len(model.layers))

    def forward(self, input_ids: Any, *, cache: Any = None, **kw: Any) -> Any:
        return self.model.forward(input_ids, cache=cache, plan=self.plan, **kw)

    __call__ = forward

    def new_cache(self, *args: Any, **kw: Any) -> Any:
        return self.model.new_cache(self.plan, *args, **kw)

    def run_with_cache(self, input_ids: Any, sites: Any = None, **kw: Any) -> Any:
        return self.model.run_with_cache(input_ids, sites, plan=self.plan, **kw)

    def describe(self) -> PlanSummary:
        return describe_plan(self.plan, len(self.model.layers), model=self.model)

    @property
    def n_layers(self) -> int:
        return len(self.model.layers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["model"], name)

    def __repr__(self) -> str:
        return f"StitchedModel({type(self.model).__name__}, plan={plan_to_string(self.plan, self.n_layers)!r})"


def stitch(model: LM, plan: Any) -> StitchedModel:
    """``stitch(model, "0-23,27-29")``: the REPL spelling of ``StitchedModel``."""
    return StitchedModel(model, plan)
