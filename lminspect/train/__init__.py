"""Training: the loop, data pipeline, plans, checkpoints and the run log (see docs/training.md).

``from lminspect.train import TrainConfig, train, load_run``; torch is imported only
when training starts.
"""

from __future__ import annotations

from lminspect.train.loop import TrainConfig, TrainResult, train
from lminspect.train.runlog import Run, load_run

__all__ = ["Run", "TrainConfig", "TrainResult", "load_run", "train"]
