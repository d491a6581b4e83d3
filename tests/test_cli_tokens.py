"""Tokens shown and typed one way: a visible space mark in tables, and one rule for a token typed on
the command line (a bare word is the word after a space; quotes keep exact text) in lens, dla,
patch and timeline."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lminspect.cli import app
from lminspect.cli.compare_cmd import _label_words
from lminspect.compare.embeddings import token_ids
from lminspect.errors import UserError
from lminspect.lens.readout import target_text
from lminspect.lens.render import visible_token

runner = CliRunner()


@pytest.mark.parametrize(("tok", "shown"), [(" time", "␣time"), ("time", "time"), (" ", "␣"), ("\n", "\\n"),
                                            ("\\n", "\\n"), ("a\x01", "a\\x01"), ("[/]", "[/]")])
def test_visible_token(tok, shown):
    assert visible_token(tok) == shown


@pytest.mark.parametrize(("typed", "text"), [("Paris", " Paris"), (" Paris", " Paris"), ('"Paris"', "Paris"),
                                             ("' Paris'", " Paris"), ("id:7", "id:7")])
def test_one_target_rule(typed, text):
    assert target_text(typed) == text


def test_token_labels_follow_the_rule():
    assert _label_words('the, and ,"cat"') == [" the", " and", "cat"]

    class Tok:
        vocab = {" the": 1, "the": 2, " cat": 3}

        def encode(self, text, add_special_tokens=False):
            return [self.vocab[text]] if text in self.vocab else [9, 9]

    assert token_ids(Tok(), [" the", "the", "cat"]) == [(" the", 1), ("the", 2), ("cat", 3)]
    with pytest.raises(UserError, match="' dog': 2 tokens"):
        token_ids(Tok(), [" dog"])  # typed with its space: only that spelling is tried


def test_lens_target_bare_word_is_the_word_after_a_space(tiny_llama_dir):
    d = str(tiny_llama_dir)
    runs = [runner.invoke(app, ["lens", d, "Once upon a", "--target", t, "--plot", "none"], env={"COLUMNS": "250"}) for t in
            ("time", " time", '"time"')]
    assert all(r.exit_code == 0 for r in runs), [r.output for r in runs]
    assert runs[0].stdout == runs[1].stdout
    assert "rank ␣" in runs[0].stdout and "rank ␣" not in runs[2].stdout  # the target's space, visible
