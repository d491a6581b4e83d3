"""Experiment registry: entry points listed without importing plugins, broken plugins reported,
plugins disabled by env/flag, the example plugin installs and trains."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lminspect.errors import UserError
from lminspect.experiments import get_experiment, list_experiments

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "plugins" / "lminspect-unified-embeddings"


def _fake_plugin(root: Path, name: str = "broken_exp", body: str = "raise ImportError('no such thing')") -> Path:
    """A hand-made distribution (dist-info + module) on its own sys.path entry."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "lmi_fake_plugin.py").write_text(
        "import pathlib, os\n"
        "pathlib.Path(os.environ['LMI_MARKER']).write_text('imported')\n" + body + "\n")
    di = root / "lmi_fake_plugin-9.9.dist-info"
    di.mkdir(exist_ok=True)
    (di / "METADATA").write_text("Metadata-Version: 2.1\nName: lmi-fake-plugin\nVersion: 9.9\n"
                                 "Summary: A plugin that cannot be imported.\n")
    (di / "entry_points.txt").write_text(f"[lminspect.experiments]\n{name} = lmi_fake_plugin:exp\n")
    return root


def _cli(args: list[str], pythonpath: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    e = dict(os.environ, OMP_NUM_THREADS="1", **env)
    if pythonpath is not None:
        e["PYTHONPATH"] = os.pathsep.join([str(pythonpath), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-m", "lminspect", *args], capture_output=True, text=True,
                          env=e, timeout=300, cwd=pythonpath or REPO)


def test_builtins_listed_with_dist_and_summary():
    infos = {i.name: i for i in list_experiments(load_plugins=False)}
    assert {"gpt2ish", "llamaish", "value_norm", "growing"} <= set(infos)
    assert infos["gpt2ish"].dist == "lminspect" and infos["gpt2ish"].builtin
    assert "GPT-2" in infos["gpt2ish"].summary


def test_growing_without_growth_engine_is_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "lminspect.grow", None)  # as if the growth engine were absent
    infos = {i.name: i for i in list_experiments(load_plugins=False)}
    assert "not available" in infos["growing"].error
    exp = get_experiment("growing")
    with pytest.raises(UserError, match="not available yet"):
        exp.build(100, 16)


def test_unknown_experiment_lists_known_names():
    with pytest.raises(UserError, match="unknown experiment 'nope'; known experiments: gpt2ish"):
        get_experiment("nope")


def test_broken_plugin_listed_not_imported(tmp_path, monkeypatch):
    root = _fake_plugin(tmp_path / "site")
    marker = tmp_path / "marker"
    monkeypatch.setenv("LMI_MARKER", str(marker))
    monkeypatch.setenv("LMINSPECT_LOAD_PLUGINS", "1")
    monkeypatch.syspath_prepend(str(root))
    import importlib

    importlib.invalidate_caches()
    infos = {i.name: i for i in list_experiments()}
    assert "broken_exp" in infos and not marker.exists()  # listed without importing
    info = infos["broken_exp"]
    assert (info.dist, info.version, info.summary) == ("lmi-fake-plugin", "9.9", "A plugin that cannot be imported.")
    assert info.error is None
    checked = {i.name: i for i in list_experiments(check=True)}
    assert "ImportError: no such thing" in checked["broken_exp"].error and marker.exists()
    with pytest.raises(UserError, match="failed to import: ImportError: no such thing"):
        get_experiment("broken_exp")
    monkeypatch.setenv("LMINSPECT_LOAD_PLUGINS", "0")
    assert "broken_exp" not in {i.name for i in list_experiments()}
    monkeypatch.setenv("LMINSPECT_LOAD_PLUGINS", "")
    assert "broken_exp" not in {i.name for i in list_experiments()}


def test_cli_survives_broken_plugin(tmp_path):
    root = _fake_plugin(tmp_path / "site")
    env = {"LMI_MARKER": str(tmp_path / "m"), "LMINSPECT_LOAD_PLUGINS": "1"}
    r = _cli(["exp", "list", "--check"], root, **env)
    assert r.returncode == 0, r.stderr
    assert "gpt2ish" in r.stdout and "broken_exp" in r.stdout and "BROKEN: ImportError" in r.stdout
    r = _cli(["exp", "list", "--no-plugins"], root, **env)
    assert r.returncode == 0 and "broken_exp" not in r.stdout
    r = _cli(["train", "--exp", "list"], root, **env)
    assert r.returncode == 0 and "value_norm" in r.stdout


def test_unified_embeddings_plugin_installs_lists_and_trains(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(PLUGIN, src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, capture_output=True, timeout=300)
    env = {"LMINSPECT_LOAD_PLUGINS": "1"}
    r = _cli(["exp", "list"], target, **env)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("unified_embeddings"))
    assert "lminspect-unified-embeddings 0.1.0" in line
    run = tmp_path / "run"
    r = _cli(["train", "--exp", "unified_embeddings", "--run-dir", str(run), "--max-steps", "3",
              "--seq-len", "16", "--batch-size", "2", "--set", "n_layer=1", "--set", "dim=32",
              "--set", "n_head=2", "--eval-every", "0"], target, **env)
    assert r.returncode == 0, r.stderr
    ck = run / "checkpoints" / "step_0000003"
    from safetensors import safe_open

    with safe_open(str(ck / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        emb = f.get_tensor("embed.tokens.weight")
    assert emb.shape == (4096, 32)
    assert not any("table" in k or "mlp.0" in k for k in keys)  # sacrificial parts are gone
    with safe_open(str(ck / "trainer.safetensors"), "pt") as f:
        assert "model/embed.tokens.table.weight" in set(f.keys())  # but kept for resuming
