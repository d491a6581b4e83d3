"""Training: the loop, data pipeline, plans, checkpoints and the run log (see docs/training.md).

``from lminspect.train import TrainConfig, train, load_run``; torch is imported only
when training starts. ``train`` is ``train.runner.train_run``: the run directory owned for the
whole run (lock, leftovers, resume checks), the same workflow as ``lminspect train``.
"""

from __future__ import annotations

from lminspect.train.loop import TrainConfig, TrainResult
from lminspect.train.runlog import Run, load_run
from lminspect.train.runner import train_run as train

__all__ = ["Run", "TrainConfig", "TrainResult", "load_run", "train"]
