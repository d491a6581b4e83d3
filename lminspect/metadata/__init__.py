"""Batch metadata and ordered training (seed 001, llama2_prebiasing).

- :mod:`.compute`: per-sample metadata (id, lengths, reference perplexity, plugin metrics) -> parquet
  (``lminspect data metadata``);
- :mod:`.metrics`: built-in metrics and the ``lminspect.metrics`` entry-point group;
- :mod:`.order`: the ordered training stream behind ``lminspect train --order-by``.
"""

from __future__ import annotations

__all__ = ["compute", "metrics", "order"]
