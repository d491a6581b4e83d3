"""Training plans: an ordered list of steps, each a dataset with a token budget (as lmplay's).

A plan is a built-in name or a JSON file::

    {"name": "my_plan",
     "steps": [
       {"name": "warmup", "data": "builtin", "max_tokens": 200000, "seq_len": 128},
       {"name": "wiki",   "data": "wikimedia/wikipedia:20231101.en", "split": "train",
        "max_tokens": 50000000, "text_field": "text"}
     ]}

Steps run in order; a step ends when its ``max_tokens`` are consumed (``null`` = no
limit of its own: only ``--max-steps`` / ``--max-tokens`` stop it). ``seq_len`` defaults
to the run's ``--seq-len``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lminspect.errors import UserError


@dataclass
class PlanStep:
    name: str
    data: str = "builtin"
    split: str = "train"
    max_tokens: int | None = None
    seq_len: int | None = None
    text_field: str = "text"


@dataclass
class Plan:
    name: str
    steps: list[PlanStep] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "steps": [asdict(s) for s in self.steps]}


BUILTIN_PLANS: dict[str, Plan] = {
    "default": Plan("default", [PlanStep("builtin", "builtin", max_tokens=None)]),
    "wiki_en": Plan("wiki_en", [PlanStep("wiki_en", "wikimedia/wikipedia:20231101.en", max_tokens=None)]),
    # lmplay's default plan: English then Spanish Wikipedia
    "lmplay_default": Plan("lmplay_default", [
        PlanStep("wiki_en", "wikimedia/wikipedia:20231101.en", max_tokens=None),
        PlanStep("wiki_es", "wikimedia/wikipedia:20231101.es", max_tokens=None),
    ]),
}


def plan_from_dict(d: dict[str, Any], where: str = "plan") -> Plan:
    if not isinstance(d, dict) or not isinstance(d.get("steps"), list) or not d["steps"]:
        raise UserError(f"{where}: a plan is an object with a non-empty 'steps' list")
    steps = []
    known = set(PlanStep.__dataclass_fields__)
    for i, s in enumerate(d["steps"]):
        if not isinstance(s, dict):
            raise UserError(f"{where}: step {i} is not an object")
        extra = set(s) - known
        if extra:
            raise UserError(f"{where}: step {i} has unknown keys {sorted(extra)} (known: {sorted(known)})")
        s = dict(s)
        if not isinstance(s.get("data"), str) or not s["data"].strip():  # never a silent builtin corpus
            raise UserError(f"{where}: step {i} needs 'data' (a file, folder, hub id, or \"builtin\"), got "
                            f"{s.get('data')!r}")
        s.setdefault("name", f"step{i}")
        for k in ("max_tokens", "seq_len"):
            if s.get(k) is not None and (not isinstance(s[k], int) or s[k] <= 0):
                raise UserError(f"{where}: step {i} {k} must be a positive integer")
        steps.append(PlanStep(**s))
    return Plan(str(d.get("name", where)), steps)


def load_plan(spec: str | None, data: str | None = None) -> Plan:
    """``--data`` makes a one-step plan; otherwise a built-in plan name or a JSON file."""
    if data is not None:
        if spec is not None:
            raise UserError("--train-plan and --data are exclusive: put the data into the plan's steps")
        return Plan("data", [PlanStep("data", data)])
    spec = spec or "default"
    if spec in BUILTIN_PLANS:
        return BUILTIN_PLANS[spec]
    path = Path(spec)
    if not path.exists() and not path.is_symlink():
        raise UserError(f"unknown plan {spec!r}; built-in plans: {', '.join(BUILTIN_PLANS)}, or a JSON file")
    from lminspect.fsutil import read_text

    text = read_text(path, option="--train-plan", max_bytes=1 << 20)
    try:
        d = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"plan {path}: not valid JSON ({e})") from None
    return plan_from_dict(d, str(path))
