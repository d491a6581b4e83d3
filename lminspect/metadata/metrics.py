"""Per-sample metrics for batch metadata: built-ins plus plugins (entry-point group ``lminspect.metrics``).

A metric is ``callable(text: str, tokens: list[int]) -> float``. Built-ins are always available
(no entry point needed); a plugin distribution registers more in its pyproject::

    [project.entry-points."lminspect.metrics"]
    my_metric = "my_package:my_metric"

A plugin that fails to load is skipped with a warning on stderr (it never breaks the command).
"""

from __future__ import annotations

import re
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


def available_metrics(load_plugins: bool | None = True) -> dict[str, Metric]:
    """Built-ins, then entry-point plugins (a plugin may not replace a built-in); loading through
    ``experiments.plugins`` (None: ``LMINSPECT_LOAD_PLUGINS`` decides), a broken one warned about and skipped."""
    from lminspect.experiments.plugins import (
        PluginError,
        load_plugin,
        plugin_entry_points,
        warn_broken_plugin,
    )

    out = dict(BUILTIN_METRICS)
    if load_plugins is False:
        return out
    for ep in plugin_entry_points("lminspect.metrics", load_plugins):
        if ep.name in BUILTIN_METRICS:
            continue
        try:
            fn = load_plugin(ep)
        except PluginError as e:  # enumerating: reported, not fatal
            warn_broken_plugin("metric", ep, e)
            continue
        if callable(fn):
            out[ep.name] = fn
    return out
