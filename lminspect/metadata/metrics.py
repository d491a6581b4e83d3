"""Per-sample metrics for batch metadata: built-ins plus plugins (entry-point group ``lminspect.metrics``).

A metric is ``callable(text: str, tokens: list[int]) -> float``. Built-ins are always available
(no entry point needed); a plugin distribution registers more in its pyproject::

    [project.entry-points."lminspect.metrics"]
    my_metric = "my_package:my_metric"

A plugin that fails to load is skipped with a warning on stderr (it never breaks the command).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable

Metric = Callable[[str, list[int]], float]
_WORD = re.compile(r"\w+", re.UNICODE)
_SENT = re.compile(r"[.!?]+(?:\s|$)")


def n_words(text: str, tokens: list[int]) -> float:
    """Words (runs of word characters)."""
    return float(len(_WORD.findall(text)))


def mean_word_len(text: str, tokens: list[int]) -> float:
    """Mean characters per word (a crude vocabulary-difficulty proxy)."""
    words = _WORD.findall(text)
    return sum(len(w) for w in words) / len(words) if words else 0.0


def type_token_ratio(text: str, tokens: list[int]) -> float:
    """Distinct tokens / tokens: lexical diversity under the reference tokenizer."""
    return len(set(tokens)) / len(tokens) if tokens else 0.0


def mean_sentence_len(text: str, tokens: list[int]) -> float:
    """Words per sentence (llama2_prebiasing's "sentence length")."""
    n_sent = max(1, len(_SENT.findall(text)))
    return n_words(text, tokens) / n_sent


def chars_per_token(text: str, tokens: list[int]) -> float:
    """Compression of the reference tokenizer on this sample."""
    return len(text) / len(tokens) if tokens else 0.0


BUILTIN_METRICS: dict[str, Metric] = {
    "n_words": n_words,
    "mean_word_len": mean_word_len,
    "type_token_ratio": type_token_ratio,
    "mean_sentence_len": mean_sentence_len,
    "chars_per_token": chars_per_token,
}


def available_metrics(load_plugins: bool = True) -> dict[str, Metric]:
    """Built-ins, then entry-point plugins (a plugin may not replace a built-in)."""
    out = dict(BUILTIN_METRICS)
    if not load_plugins:
        return out
    from importlib.metadata import entry_points

    for ep in entry_points(group="lminspect.metrics"):
        if ep.name in out and ep.value.startswith("lminspect.metadata.metrics:"):
            continue
        try:
            fn = ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plugin is reported, not fatal
            print(f"lminspect: warning: metric plugin {ep.name} ({ep.value}) failed to load: {e}", file=sys.stderr)
            continue
        if callable(fn) and ep.name not in BUILTIN_METRICS:
            out[ep.name] = fn
    return out
