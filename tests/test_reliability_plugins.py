"""A misbehaving experiment plugin (sys.exit on import, a factory returning the wrong type, a
factory that raises) is reported like any broken plugin, in one line; it never ends the command
with a traceback or with the plugin's own exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("reliability")

REPO = Path(__file__).resolve().parent.parent


def _plugin(root: Path, name: str, body: str) -> Path:
    """A hand-made distribution (dist-info + module) on its own sys.path entry."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"lmi_{name}.py").write_text(body + "\n")
    di = root / f"lmi_{name}-1.0.dist-info"
    di.mkdir()
    (di / "METADATA").write_text(f"Metadata-Version: 2.1\nName: lmi-{name}\nVersion: 1.0\nSummary: x\n")
    (di / "entry_points.txt").write_text(f"[lminspect.experiments]\n{name} = lmi_{name}:exp\n")
    return root


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", LMINSPECT_LOAD_PLUGINS="1",
               PYTHONPATH=os.pathsep.join([str(root), str(REPO)]))
    return subprocess.run([sys.executable, "-m", "lminspect", *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=root)


EXP = "from lminspect.experiments.base import Experiment\n"
CASES = [
    ("exits", "import sys\nsys.exit(3)", "called sys.exit(3)"),
    ("wrongtype", EXP + "exp = Experiment('wrongtype', 'd', model_factory=lambda v, s, **k: 42)",
     "returned int, not a torch.nn.Module"),
    ("raises", EXP + "def f(v, s, **k):\n    raise KeyError('oops')\nexp = Experiment('raises', 'd', model_factory=f)",
     "model_factory failed: KeyError"),
    ("exits_in_factory", EXP + "import sys\nexp = Experiment('exits_in_factory', 'd', "
     "model_factory=lambda v, s, **k: sys.exit(4))", "model_factory failed: SystemExit"),
]


@pytest.mark.parametrize(("name", "body", "needle"), CASES, ids=[c[0] for c in CASES])
def test_broken_plugin_is_one_line_exit_2(tmp_path, name, body, needle):
    root = _plugin(tmp_path / "site", name, body)
    r = _cli(root, "train", "--exp", name, "--max-steps", "1", "--run-dir", str(tmp_path / "run"),
             "--set", "n_layer=1")
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lminspect: error: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_exp_list_check_survives_a_plugin_that_exits(tmp_path):
    root = _plugin(tmp_path / "site", "exits", "import sys\nsys.exit(3)")
    r = _cli(root, "exp", "list", "--check")
    assert r.returncode == 0, r.stderr
    assert "exits" in r.stdout and "sys.exit(3)" in r.stdout and "gpt2ish" in r.stdout


def test_plugin_never_replaces_a_builtin(tmp_path):
    """A plugin on PYTHONPATH declaring ``gpt2ish`` is ignored, with one warning line naming it; the
    built-in is what ``--describe`` shows."""
    body = EXP + "exp = Experiment('gpt2ish', 'IMPOSTOR', model_factory=lambda v, s, **k: 42)"
    root = _plugin(tmp_path / "site", "gpt2ish", body)
    r = _cli(root, "train", "--exp", "gpt2ish", "--describe")
    assert r.returncode == 0, r.stderr
    assert "IMPOSTOR" not in r.stdout
    warn = [ln for ln in r.stderr.splitlines() if ln.startswith("lminspect: warning:")]
    assert len(warn) == 1 and "gpt2ish" in warn[0] and "ignored" in warn[0], r.stderr
