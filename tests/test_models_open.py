"""models.open.open_model: the one place that opens a model, with the CLI's thread rule everywhere."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from typer.testing import CliRunner

import lminspect
from lminspect import runtime
from lminspect.cli import app
from lminspect.models.open import open_model, reopen_like

PKG = Path(lminspect.__file__).parent


@pytest.fixture
def busy_machine(monkeypatch):
    """Other programs keep all CPUs but two busy (the 1-minute load), no thread variables: the
    default is 2 threads (1 on a one-CPU box), not torch's all cores. (The real CPU count: a
    count above it would be cut by the compiled decode's own thread pool, which shares OpenMP's.)
    Restores torch's thread count and forgets any count an earlier test applied."""
    import torch

    before = torch.get_num_threads()
    for name in ("LMINSPECT_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.setenv(name, "1")  # so teardown restores the value set_threads overwrites
        monkeypatch.delenv(name)
    cpus = runtime._cpus()
    monkeypatch.setattr(runtime.os, "getloadavg", lambda: (max(0.0, cpus - 2.0),) * 3)
    monkeypatch.setattr(runtime, "_applied", None)
    yield min(2, cpus)
    torch.set_num_threads(before)


def test_repl_open_on_a_busy_machine_uses_the_cli_threads(tiny_llama_dir, busy_machine, monkeypatch):
    import torch

    m = lminspect.open(tiny_llama_dir)
    m.generate("hello", max_new_tokens=2)
    assert torch.get_num_threads() == busy_machine == m._shared.opened.threads
    torch.set_num_threads(1)
    monkeypatch.setattr(runtime, "_applied", None)
    r = CliRunner().invoke(app, ["generate", str(tiny_llama_dir), "hello", "-n", "2"])
    assert r.exit_code == 0, r.output
    assert f"{runtime.threads_label(busy_machine)}" in r.output
    assert torch.get_num_threads() == busy_machine


def test_open_keeps_the_threads_a_command_set(tiny_llama_dir, busy_machine, monkeypatch):
    import torch

    runtime.set_threads(2)  # the CLI's --threads 2
    monkeypatch.setenv("LMINSPECT_THREADS", "1")  # loses to the command's --threads
    open_model(tiny_llama_dir, tokenizer=False)
    assert torch.get_num_threads() == 2
    assert open_model(tiny_llama_dir, threads=1, lazy=True).threads == 1 == torch.get_num_threads()


def test_open_model_unpacks_and_reopens_the_same_way(tiny_llama_dir):
    store, lm, tok = open_model(tiny_llama_dir, weights="bfloat16")
    assert store.n_layers == lm.n_layers and tok.encode("hello")
    assert str(lm.dtype) == "torch.bfloat16"
    again = reopen_like(lm, tiny_llama_dir)
    assert again.open_options == lm.open_options and again.dtype == lm.dtype
    lazy = open_model(tiny_llama_dir, lazy=True)
    assert not lazy.built and lazy.store.n_layers == lm.n_layers


def test_one_place_assembles_store_model_and_tokenizer():
    """Only models/open.py imports load_model / load_tokenizer (their own modules define them)."""
    owners = {"load_model": "lminspect.models", "load_tokenizer": "lminspect.tokenizer"}
    found = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).as_posix()
        if rel in ("lminspect/models/open.py", "lminspect/models/__init__.py", "lminspect/tokenizer.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module in owners.values():
                found += [f"{rel}: {a.name}" for a in node.names if owners.get(a.name) == node.module]
            elif isinstance(node, ast.Attribute) and node.attr in owners:
                found.append(f"{rel}: .{node.attr}")
    assert found == []


def test_one_thread_drops_to_one_and_restores():
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with runtime.one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with runtime.one_thread(when=False):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_site_names_have_one_spelling():
    """Hook-site names come from models.sites.site_name, not f-strings (TransformerLens's get_act_name)."""
    import re

    from lminspect.models.sites import SITE_KINDS, site_name

    assert site_name("attn_probs", 3) == "attn_probs.3"
    hand = re.compile(r'f"(\{kind\}|\{k\}|' + "|".join(SITE_KINDS) + r')\.\{[^}]+\}"')
    found = [f"{p.relative_to(PKG.parent)}:{n}" for p in PKG.rglob("*.py") if p.name != "sites.py"
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if hand.search(line)]
    assert found == []
