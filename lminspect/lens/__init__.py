"""Interpretability instruments that work on any layer plan: logit lens, direct logit attribution,
activation patching. Plan positions (not layer indices) index every result, so a layer that a
stitched plan runs three times has three rows. See docs/lens.md."""

from lminspect.lens.attribution import DLAResult, direct_logit_attribution
from lminspect.lens.logit_lens import LensResult, lens_of_text, logit_lens
from lminspect.lens.patching import PATCH_SITES, PatchResult, activation_patching
from lminspect.lens.readout import Metric, Target, parse_metric, plan_labels, resolve_token

__all__ = [
    "DLAResult", "LensResult", "Metric", "PATCH_SITES", "PatchResult", "Target", "activation_patching",
    "direct_logit_attribution", "lens_of_text", "logit_lens", "parse_metric", "plan_labels", "resolve_token",
]
