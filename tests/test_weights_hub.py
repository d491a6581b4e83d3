"""The hub path (``hf:ORG/NAME``) through the real huggingface_hub, with no network: a hub
cache laid out as huggingface_hub writes it, read offline (``HF_HUB_OFFLINE=1``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root: Path, repo: str, model_dir: Path) -> Path:
    """``root/models--ORG--NAME/{refs/main, snapshots/COMMIT/...}``: what a download leaves."""
    folder = root / ("models--" + repo.replace("/", "--"))
    shutil.copytree(model_dir, folder / "snapshots" / COMMIT)
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(COMMIT)
    return root


def run_cli(*args: str, cache: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", LMINSPECT_CACHE=str(tmp_path / "lmi"))
    return subprocess.run([sys.executable, "-m", "lminspect", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_hub_model_offline_from_cache(tiny_llama_dir, tmp_path):
    cache = hub_cache(tmp_path / "hub", "org/tiny-llama", tiny_llama_dir)
    r = run_cli("fetch", "hf:org/tiny-llama", cache=cache, tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    snapshot = cache / "models--org--tiny-llama" / "snapshots" / COMMIT
    assert str(snapshot) in r.stdout.replace("\n", "")
    r = run_cli("inspect", "hf:org/tiny-llama", cache=cache, tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "layers.0.attn.q" in r.stdout.replace("\n", "")
    # not in the cache while offline: one line, exit 2, no traceback
    r = run_cli("inspect", "hf:org/missing", cache=cache, tmp_path=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "hf:org/missing" in r.stderr and "offline" in r.stderr
    assert "Traceback" not in r.stderr


def test_hub_model_opens_in_python(tiny_llama_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = hub_cache(tmp_path / "hub", "org/tiny", tiny_llama_dir)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))  # read at import
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from lminspect.weights import open_store

    hub = open_store("hf:org/tiny")
    local = open_store(tiny_llama_dir)
    assert hub.keys() == local.keys()
    name = hub.keys()[0]
    np.testing.assert_array_equal(hub[name], local[name])
