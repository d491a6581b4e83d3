"""Small frictions of issue 29: the README's session line from any folder, did-you-mean for a
misspelt session or fetched model name."""

from __future__ import annotations

import pytest

from lminspect.errors import UserError
from lminspect.sessions_runner import resolve


def test_readme_session_path_works_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no sessions/ here: the shipped script is found
    assert resolve("sessions/frankenllama.py").name == "frankenllama.py"
    assert resolve("frankenllama").name == "frankenllama.py"
    with pytest.raises(UserError, match="did you mean 'frankenllama'"):
        resolve("frankenlama")


def test_misspelt_fetched_name_suggests_the_known_one(tmp_path, monkeypatch):
    from lminspect.weights import open_store

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="did you mean 'smollm2'"):
        open_store("smolm2")
    with pytest.raises(UserError) as e:
        open_store("zzzz")
    assert "did you mean" not in e.value.message
