"""experiments.plugins: one loader and one failure policy for experiment and metric plugins."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from lminspect.errors import UserError
from lminspect.experiments import plugins

GOOD = EntryPoint("good", "lminspect.metadata.metrics:n_words", "lminspect.metrics")
MISSING = EntryPoint("missing", "no_such_module_for_lminspect:f", "lminspect.metrics")


def test_load_plugin_names_the_failure():
    assert plugins.load_plugin(GOOD)("a b", [1, 2]) == 2
    with pytest.raises(plugins.PluginError, match="ModuleNotFoundError"):
        plugins.load_plugin(MISSING)
    err = plugins.broken_plugin_error("metric", MISSING, plugins.PluginError("boom"))
    assert isinstance(err, UserError) and "metric 'missing'" in err.message and "boom" in err.message


def test_enumerating_warns_and_skips_a_broken_plugin(monkeypatch, capsys):
    from lminspect.metadata.metrics import BUILTIN_METRICS, available_metrics

    extra = EntryPoint("words_again", "lminspect.metadata.metrics:n_words", "lminspect.metrics")
    monkeypatch.setattr(plugins, "plugin_entry_points", lambda group, flag=None: [MISSING, extra])
    got = available_metrics()
    assert set(got) == set(BUILTIN_METRICS) | {"words_again"}
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lminspect: warning: metric plugin missing")
    assert set(available_metrics(False)) == set(BUILTIN_METRICS)


def test_the_switch_hides_third_party_plugins(monkeypatch):
    monkeypatch.setenv(plugins.ENV, "0")
    assert not plugins.plugins_enabled() and plugins.plugins_enabled(True)
    assert all(plugins.is_builtin(ep) for ep in plugins.plugin_entry_points("lminspect.experiments"))
