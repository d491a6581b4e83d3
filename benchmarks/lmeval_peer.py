"""Run the REAL lm-evaluation-harness on lminspect's multiple-choice items (benchmark/test peer).

The items are written as a local jsonl plus a task YAML (HellaSwag's settings: ``multiple_choice``,
``target_delimiter: " "``, acc and acc_norm), and lm-eval's own ``simple_evaluate`` runs them
offline with its ``HFLM`` on a HF model directory. Returns lm-eval's time inside
``HFLM.loglikelihood`` (the scoring, not the model load, task set-up or, at ``auto``, the batch-size
probe, which lm-eval 0.4.13 repeats on every call and which is timed apart), its per-item,
per-ending log-likelihoods from ``log_samples`` and its aggregate metrics.

Needs ``pip install lm-eval`` (not a dependency of lminspect); importing this module does not.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASK = "lminspect_mc"

TASK_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
output_type: multiple_choice
validation_split: validation
doc_to_text: "{{{{ctx}}}}"
doc_to_target: "{{{{label}}}}"
doc_to_choice: "{{{{endings}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


@dataclass
class PeerRun:
    seconds: float  # wall time inside HFLM.loglikelihood, less its batch-size probing (auto)
    cpu_seconds: float  # process CPU time there (robust to other load on a shared machine)
    lls: list[list[float]]  # per item (in input order), per ending
    metrics: dict[str, float]
    batch_size: str  # what was asked (1, 8, auto) and what lm-eval picked for auto
    probe_seconds: float = 0.0  # auto: wall time of its batch-size probe (not in ``seconds``)
    probe_cpu_seconds: float = 0.0


def available() -> bool:
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        return False
    return True


def write_task(items: list[Any], folder: Path) -> Path:
    """The items as ``items.jsonl`` and a task YAML next to it; returns the folder (include_path)."""
    data = folder / "items.jsonl"
    with open(data, "w", encoding="utf-8") as f:
        for k, it in enumerate(items):
            f.write(json.dumps({"id": k, "ctx": it.ctx, "endings": list(it.endings), "label": int(it.label)}) + "\n")
    (folder / f"{TASK}.yaml").write_text(TASK_YAML.format(task=TASK, data=data), encoding="utf-8")
    return folder


def load_hflm(hf_dir: str | Path, batch_size: int | str) -> Any:
    """lm-eval's HFLM on CPU in float32 (the model is loaded here, outside the timed part)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(hf_dir), device="cpu", dtype="float32", batch_size=batch_size)


def _timed(fn: Any, spent: list[float], slot: int) -> Any:
    """``fn``, adding its wall and CPU seconds to ``spent[slot]`` and ``spent[slot + 1]``."""

    def wrapped(*a: Any, **kw: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(*a, **kw)
        finally:
            spent[slot] += time.perf_counter() - t0
            spent[slot + 1] += time.process_time() - c0

    return wrapped


def run(lm: Any, items: list[Any]) -> PeerRun:
    """Score ``items`` with lm-eval's own pipeline on an ``HFLM`` from ``load_hflm``."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    spent = [0.0, 0.0, 0.0, 0.0]  # scoring wall, CPU; of which batch-size probing (auto) wall, CPU
    lm.loglikelihood = _timed(lm.loglikelihood, spent, 0)
    # lm-eval 0.4.13 re-probes on every loglikelihood call at batch_size auto: timed apart
    lm._detect_batch_size = _timed(lm._detect_batch_size, spent, 2)
    try:
        with tempfile.TemporaryDirectory(prefix="lminspect-lmeval-") as tmp:
            tm = TaskManager(include_path=str(write_task(items, Path(tmp))))
            out = simple_evaluate(model=lm, tasks=[TASK], task_manager=tm, log_samples=True,
                                  bootstrap_iters=0, verbosity="ERROR")
    finally:
        del lm.loglikelihood, lm._detect_batch_size
    samples = sorted(out["samples"][TASK], key=lambda s: s["doc_id"])
    lls = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    res = out["results"][TASK]
    metrics = {k.split(",")[0]: float(v) for k, v in res.items() if isinstance(v, int | float)}
    picked = getattr(lm, "batch_size", None)
    return PeerRun(spent[0] - spent[2], spent[1] - spent[3], lls, metrics, str(picked), spent[2], spent[3])
