"""Checks of option values at the command boundary: one ``UserError`` line naming the option.

Typer checks that ``--lr`` parses as a float; these check that the value makes sense (finite,
positive, in range), so a NaN or a negative step count never reaches the run it would poison.
"""

from __future__ import annotations

import math
import re
from typing import Any

from lminspect.errors import UserError

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def finite(option: str, value: float | None, *, positive: bool = False, minimum: float | None = None,
           maximum: float | None = None) -> None:
    """``value`` (when given) is a finite number, > 0 if ``positive``, within [minimum, maximum]."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{option} {value!r}: expected a number", option=option)
    if not math.isfinite(value):
        raise UserError(f"{option} {value}: expected a finite number", option=option)
    if positive and not value > 0:
        raise UserError(f"{option} {value}: must be positive", option=option)
    if minimum is not None and value < minimum:
        raise UserError(f"{option} {value}: must be at least {minimum:g}", option=option)
    if maximum is not None and value > maximum:
        raise UserError(f"{option} {value}: must be at most {maximum:g}", option=option)


def count(option: str, value: int | None, *, minimum: int = 1, maximum: int | None = None) -> None:
    """``value`` (when given) is an integer >= ``minimum`` (and <= ``maximum``)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{option} {value!r}: expected a whole number", option=option)
    if value < minimum:
        raise UserError(f"{option} {value}: must be at least {minimum}", option=option)
    if maximum is not None and value > maximum:
        raise UserError(f"{option} {value}: must be at most {maximum}", option=option)


def device(name: str, option: str = "--device") -> str:
    """A device name torch understands (cpu, cuda, cuda:N, mps, or auto), or one line."""
    if not isinstance(name, str) or not _DEVICE.match(name.strip()):
        raise UserError(f"{option} {name!r}: expected cpu, cuda, cuda:N or auto", option=option)
    name = name.strip()
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"{option} {name}: CUDA is not available on this machine (hint: {option} cpu)", option=option)
        idx = int(name.split(":")[1]) if ":" in name else 0
        if idx >= torch.cuda.device_count():
            raise UserError(f"{option} {name}: this machine has {torch.cuda.device_count()} CUDA device(s)", option=option)
    if name == "mps":
        import torch

        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError(f"{option} mps: MPS is not available on this machine (hint: {option} cpu)")
    return name


def typed_value(option: str, key: str, value: Any, annotation: Any) -> Any:
    """``value`` converted to the type a dataclass field declares (``int``, ``float``, ``bool``,
    ``str``, optionals of those), or one line saying what was expected."""
    text = str(annotation)
    allow_none = "None" in text or "Optional" in text
    if value is None:
        if allow_none:
            return None
        raise UserError(f"{option} {key}=null: {key} needs a value")
    kinds = [k for k in ("bool", "int", "float", "str") if re.search(rf"\b{k}\b", text)]
    if not kinds:
        return value
    if "bool" in kinds and isinstance(value, bool):
        return value
    if "int" in kinds and isinstance(value, int) and not isinstance(value, bool):
        return value
    if "float" in kinds and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(float(value)):
            raise UserError(f"{option} {key}={value}: expected a finite number")
        return float(value)
    if "str" in kinds and isinstance(value, str):
        return value
    want = " or ".join(kinds)
    raise UserError(f"{option} {key}={value!r}: {key} takes {want}, not {type(value).__name__}")


MAX_JSON_DEPTH = 1000
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)


def json_depth(text: str) -> int:
    """How deep ``text``'s arrays and objects nest (strings skipped), counted without recursion."""
    depth = deepest = 0
    for ch in re.findall(r"[\[\]{}]", _JSON_STRING.sub("", text)):
        depth += 1 if ch in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def json_loads(text: str | bytes, where: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` for files from outside: nesting deeper than ``max_depth`` and invalid JSON are
    one line naming ``where`` (a 200,000-deep header would otherwise raise RecursionError)."""
    import json

    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{where}: not UTF-8 text (byte 0x{text[e.start]:02x} at offset {e.start})") from None
    if text.count("[") + text.count("{") > max_depth and json_depth(text) > max_depth:
        raise UserError(f"{where}: JSON nested deeper than {max_depth} levels; not a file lminspect writes or reads")
    try:
        return json.loads(text)
    except RecursionError:
        raise UserError(f"{where}: JSON nested too deeply") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not valid JSON ({e})") from None


def cut(text: object, limit: int = 200) -> str:
    """User input quoted in an error line, at most ``limit`` characters (a 200 MB plan must not
    become a 200 MB message)."""
    s = str(text)
    return s if len(s) <= limit else f"{s[: limit - 1]}… ({len(s):,} characters)"


def _looks_like_run(p: Any) -> bool:
    return (p / "stats.jsonl").exists() or ((p / "config.json").is_file() and (p / "checkpoints").is_dir())


def train_paths(run_dirs: list[Any], init_from: str | None, run_root: Any = None) -> None:
    """``train``'s folders before anything is made: a run dir that is, contains or lies inside the
    ``--init-from`` weights (its checkpoints would replace or prune them), and a ``--run-root``
    inside an existing run (its runs would mix with that run's files), are refused."""
    from pathlib import Path

    from lminspect.fsutil import check_not_input

    for rd in run_dirs:
        check_not_input(rd, init_from, option="--run-dir", flag=None)
    if run_root is not None:
        root = Path(run_root).resolve()
        for p in (root, *root.parents):
            if _looks_like_run(p):
                raise UserError(f"--run-root {run_root}: lies inside the run {p}; give a folder outside any run "
                                "(e.g. beside it)")


def plan_given(plan: str | None, option: str = "--plan") -> None:
    """A ``--plan`` typed but empty (``--plan ''``) is a mistake, not "the whole model": say so
    (the whole model is ``all``, or no ``--plan``)."""
    if plan is not None and isinstance(plan, str) and not plan.strip():
        raise UserError(f"{option} '': empty plan; give layers (e.g. 0-23,27-29), a plan file, or 'all' for the "
                        "whole model")


def token_ids(ids: Any, vocab: Any, tokenizer: Any = None, what: str = "prompt") -> Any:
    """``ids``, once every token id is inside the model's vocabulary: a tokenizer of another model
    (ids past the embedding) is one line, not an IndexError. A list, or a tensor on the CPU (a GPU
    tensor is not checked here: reading its max would cost a device sync per forward)."""
    if not isinstance(vocab, int):
        return ids
    if isinstance(ids, list | tuple):
        if not ids:
            return ids
        hi, lo = max(ids), min(ids)
    else:
        if not ids.numel() or ids.device.type != "cpu":
            return ids
        hi, lo = int(ids.max()), int(ids.min())
    if hi >= vocab or lo < 0:
        size = getattr(tokenizer, "vocab_size", None)
        has = f" (the tokenizer has {size} tokens)" if isinstance(size, int) else ""
        raise UserError(f"{what}: token id {hi if hi >= vocab else lo} is outside the model's vocabulary of {vocab}"
                        f"{has}; the tokenizer does not match the model")
    return ids
