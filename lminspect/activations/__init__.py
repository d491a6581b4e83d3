"""Activation statistics over many tokens (issue 8): one streaming pass, flat memory, resumable.

``collect(model, out, ...)`` runs the model over a dataset with hooks at the requested sites and
accumulates per-dimension mean / variance / skew / kurtosis (Chan-Pebay merges in float64),
min / max, pooled histograms, outlier ("massive activation") dimensions with example token
positions, and for ``mlp_hidden`` per-neuron firing frequency and dead neurons.
``load(DIR)`` opens a results directory; ``diff(a, b)`` compares two. See docs/activations.md.

Importing this package pulls in numpy only; torch is imported when ``collect`` runs.
(The functions are re-exported *after* their submodules load, so ``activations.collect`` is the
function, not the submodule of the same name.)
"""

from __future__ import annotations

from lminspect import _make_callable
from lminspect.activations.collect import CollectConfig, collect, resolve_sites
from lminspect.activations.diff import diff, diff_table, diff_warnings
from lminspect.activations.store import ActivationStats, KindStats, SiteStats, load

# also the REPL function li.activations(...) (see lminspect._make_callable)
_make_callable(__name__)

__all__ = ["ActivationStats", "CollectConfig", "KindStats", "SiteStats", "collect", "diff", "diff_table", "diff_warnings", "load",
           "resolve_sites"]
