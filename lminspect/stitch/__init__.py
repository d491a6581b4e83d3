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

from lminspect.models.layercall import LayerCall, full_plan
from lminspect.stitch.export import export_stitched, stitched_state_dict
from lminspect.stitch.grammar import GRAMMAR_HELP, plan_to_string
from lminspect.stitch.plans import load_plan_file, load_plans, parse_plan, sweep_plans
from lminspect.stitch.presets import PRESETS, SEED_DEPTH, preset_spec
from lminspect.stitch.summary import PlanSummary, describe_plan
from lminspect.stitch.view import StitchedModel, stitch

__all__ = [
    "GRAMMAR_HELP",
    "PRESETS",
    "SEED_DEPTH",
    "LayerCall",
    "PlanSummary",
    "StitchedModel",
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
