"""Layer plans: which decoder blocks a model runs, in which order, and how loudly.

Seed 002 ("Frankenllama") skipped and repeated Llama decoder layers by editing
``modeling_llama.py`` by hand. Here a *plan* is data: a ``list[LayerCall]`` that
the engine executes (``model.forward(ids, plan=plan)``). The package is split by concern:

* :mod:`~lminspect.stitch.grammar`: the compact grammar (``"0-23,27-29"``, ``"15r3*0.5"``,
  ``"skip:15"``; ranges **inclusive**) and printing a plan back;
* :mod:`~lminspect.stitch.plans`: any plan spec (grammar, list, mergekit slices with
  **half-open** ``layer_range``, YAML/JSON/TOML file, preset name) -> plan; named plan sets;
* :mod:`~lminspect.stitch.presets`: seed 002's plans, rescaled to the model's depth;
* :mod:`~lminspect.stitch.summary`: what a plan does (:class:`PlanSummary`);
* :mod:`~lminspect.stitch.view`: :class:`StitchedModel`, a model seen through a plan
  (shares the weights);
* :mod:`~lminspect.stitch.export`: a standalone HF directory of the stitched model, each
  occurrence's weights duplicated (HF names: :mod:`lminspect.weights.export`).

Every public name is importable from ``lminspect.stitch`` itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lminspect import lazy_exports

# Loaded on first use (PEP 562): parsing a plan (grammar, plans, presets) needs no torch, so a
# command can check its --plan before torch and the model load (a typo is reported at once).
_HOME = {
    "LayerCall": "lminspect.models.layercall", "full_plan": "lminspect.models.layercall",
    "export_stitched": "lminspect.stitch.export", "stitched_state_dict": "lminspect.stitch.export",
    "GRAMMAR_HELP": "lminspect.stitch.grammar", "plan_to_string": "lminspect.stitch.grammar",
    "load_plan_file": "lminspect.stitch.plans", "load_plans": "lminspect.stitch.plans",
    "parse_plan": "lminspect.stitch.plans", "sweep_plans": "lminspect.stitch.plans",
    "check_plan_early": "lminspect.stitch.plans",
    "PRESETS": "lminspect.stitch.presets", "SEED_DEPTH": "lminspect.stitch.presets",
    "preset_spec": "lminspect.stitch.presets",
    "PlanSummary": "lminspect.stitch.summary", "describe_plan": "lminspect.stitch.summary",
    "StitchedModel": "lminspect.stitch.view", "stitch": "lminspect.stitch.view",
}

if TYPE_CHECKING:
    from lminspect.models.layercall import LayerCall, full_plan
    from lminspect.stitch.export import export_stitched, stitched_state_dict
    from lminspect.stitch.grammar import GRAMMAR_HELP, plan_to_string
    from lminspect.stitch.plans import check_plan_early, load_plan_file, load_plans, parse_plan, sweep_plans
    from lminspect.stitch.presets import PRESETS, SEED_DEPTH, preset_spec
    from lminspect.stitch.summary import PlanSummary, describe_plan
    from lminspect.stitch.view import StitchedModel, stitch


__getattr__, __dir__ = lazy_exports(__name__, _HOME)


__all__ = [
    "GRAMMAR_HELP",
    "PRESETS",
    "SEED_DEPTH",
    "LayerCall",
    "PlanSummary",
    "StitchedModel",
    "check_plan_early",
    "describe_plan",
    "export_stitched",
    "full_plan",
    "load_plan_file",
    "load_plans",
    "parse_plan",
    "plan_to_string",
    "preset_spec",
    "stitch",
    "stitched_state_dict", "sweep_plans",
]
