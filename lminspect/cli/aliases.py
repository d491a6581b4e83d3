"""Old flag spellings kept working (docs/cli.md, "Flag grammar"): each is a hidden option whose
value is taken over by the new spelling, with one deprecation line on stderr."""

from __future__ import annotations

import sys
from typing import Any


def deprecated(old: str, new: str) -> None:
    """One line on stderr: ``old`` still works, ``new`` is the spelling to use."""
    print(f"lminspect: note: {old} is deprecated; use {new}", file=sys.stderr)


def renamed(new_value: Any, old_value: Any, old: str, new: str, default: Any = None) -> Any:
    """The value of a renamed flag: the new spelling's, else the old (hidden) one's, with a note.
    Both given (the new one off its ``default``) with different values is a mistake, said as one line."""
    if old_value is None:
        return new_value
    deprecated(old, new)
    if new_value != default and new_value != old_value:
        from lminspect.errors import UserError

        raise UserError(f"{old} and {new} are the same setting: give it once (as {new})")
    return old_value


def prompt_of(positional: str | None, option: str | None, usage: str, default: str | None = None) -> str:
    """The prompt, positional (``lminspect CMD MODEL "TEXT"``) or from the old ``--prompt``;
    ``default`` when neither is given, else a one-line error that shows ``usage``."""
    value = renamed(positional, option, "--prompt", f"the PROMPT argument ({usage})")
    if value is None:
        if default is not None:
            return default
        from lminspect.errors import UserError

        raise UserError(f"give the prompt after the model: {usage}")
    return value


def out_of(positional: Any, option: Any, usage: str) -> Any:
    """The output folder of ``stitch export`` / ``convert``: ``--out`` (the grammar) or the second
    argument (kept: ``cp SRC DST`` reads naturally); both must agree; one is needed."""
    from lminspect.errors import UserError

    if positional is not None and option is not None and positional != option:
        raise UserError(f"two outputs ({positional} and --out {option}): give one ({usage})")
    value = option if option is not None else positional
    if value is None:
        raise UserError(f"give the output folder: {usage}")
    return value
