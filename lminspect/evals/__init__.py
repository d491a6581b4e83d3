"""Evaluations over the one engine: multiple-choice (HellaSwag format), perplexity, cloze sets.

Import the submodules directly (``lminspect.evals.mc``); this package imports nothing heavy.
"""

from __future__ import annotations

__all__ = ["cloze", "mc", "perplexity"]
