"""Comparing models and checkpoints: ``diff`` (two models, tensor by tensor) and ``timeline``
(one training run across its checkpoints). See docs/compare.md."""
