"""Nothing of the user's is lost: every writer refuses an existing output through the real CLI
(one line, exit 2, naming the path and --overwrite, the old content untouched), --overwrite
replaces only once the new content is complete, and one process at a time owns a run dir."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lminspect.cli import app

pytestmark = pytest.mark.xdist_group("reliability")


def _one_line(r, *needles: str) -> str:
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("lminspect: error: "), r.output
    assert "Traceback" not in r.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def _snapshot(p: Path) -> dict[str, bytes]:
    if p.is_file():
        return {"": p.read_bytes()}
    return {str(f.relative_to(p)): f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file()}


def _nonempty_dir(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "precious.txt").write_text("my notes\n")
    return d


def _file(tmp_path: Path, name: str) -> Path:
    f = tmp_path / name
    f.write_text("my data\n")
    return f


def _src(tmp_path: Path) -> Path:
    f = tmp_path / "model.gguf"
    f.write_bytes(b"GGUF")
    return f


# (name, builder of the existing output, argv given tmp_path and OUT). The model arguments need not
# be real: the output is checked before anything is read.
WRITERS = [
    ("convert", "dir", lambda t, o: ["convert", str(_src(t)), str(o)]),
    ("stitch-export", "dir", lambda t, o: ["stitch", "export", "x", str(o), "--plan", "0-1"]),
    ("grow", "dir", lambda t, o: ["grow", "x", "--out", str(o), "--layers", "+1"]),
    ("make-mc", "file", lambda t, o: ["data", "make-mc", "builtin", "--out", str(o)]),
    ("metadata", "file", lambda t, o: ["data", "metadata", "builtin", "--out", str(o)]),
    ("plot", "file", lambda t, o: ["plot", str(t / "nope"), "--out", str(o)]),
]


@pytest.mark.parametrize(("name", "kind", "argv"), WRITERS, ids=[w[0] for w in WRITERS])
@pytest.mark.parametrize("existing", ["same-kind", "other-kind"])
def test_writer_refuses_existing_output(tmp_path, name, kind, argv, existing):
    if (kind == "dir") == (existing == "same-kind"):
        out = _nonempty_dir(tmp_path, "out")
    else:
        out = _file(tmp_path, "out")
    before = _snapshot(out)
    r = CliRunner().invoke(app, argv(tmp_path, out))
    line = _one_line(r, str(out))
    if not (kind == "file" and out.is_dir()):  # a folder where a file is wanted: no flag replaces it
        assert "--overwrite" in line
    else:
        assert "is a folder" in line
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_sweep_and_attention_refuse_a_file_or_earlier_results(tmp_path):
    f = _file(tmp_path, "results")
    _one_line(CliRunner().invoke(app, ["stitch", "sweep", "x", "--eval", "cloze", "--out", str(f)]),
              str(f), "a folder is wanted")
    d = tmp_path / "attn"
    d.mkdir()
    (d / "attn_probs.npy").write_bytes(b"old")
    _one_line(CliRunner().invoke(app, ["attention", "x", "--out", str(d)]), "attn_probs.npy", "--overwrite")
    assert (d / "attn_probs.npy").read_bytes() == b"old"


def test_session_out_refuses_a_foreign_folder(tmp_path):
    out = _nonempty_dir(tmp_path, "mine")
    _one_line(CliRunner().invoke(app, ["session", "run", "frankenllama", "--out", str(out)]), str(out), "--overwrite")
    assert (out / "precious.txt").read_text() == "my notes\n" and len(list(out.iterdir())) == 1


def test_run_dirs_that_are_files(tmp_path):
    f = _file(tmp_path, "run")
    _one_line(CliRunner().invoke(app, ["train", "--run-dir", str(f), "--max-steps", "1"]),
              str(f), "a folder is wanted")
    _one_line(CliRunner().invoke(app, ["activations", "x", "--out", str(f)]), str(f), "a folder is wanted")
    assert f.read_text() == "my data\n"


def test_overwrite_replaces_only_complete_output(tiny_llama_dir, tmp_path):
    out = _nonempty_dir(tmp_path, "exported")
    # a failing export (bad plan) with --overwrite leaves the old folder as it was
    r = CliRunner().invoke(app, ["stitch", "export", str(tiny_llama_dir), str(out), "--plan", "0-99",
                                 "--overwrite"])
    assert r.exit_code == 2 and (out / "precious.txt").is_file()
    r = CliRunner().invoke(app, ["stitch", "export", str(tiny_llama_dir), str(out), "--plan", "0-1",
                                 "--overwrite"])
    assert r.exit_code == 0, r.output
    assert (out / "model.safetensors").is_file() and not (out / "precious.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_stale_temporaries_of_a_dead_writer_are_removed(tmp_path):
    from lminspect.fsutil import atomic_dir

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    leftover = tmp_path / f".out.{dead}.abc.tmp"
    leftover.mkdir()
    (leftover / "big.bin").write_bytes(b"\0" * 1000)
    (tmp_path / ".out.old").mkdir()
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# holds the lock until the test closes its stdin (or kills it): never a fixed time that a slow
# second process on a loaded machine could outlast
HOLDER = textwrap.dedent("""
    import sys
    from lminspect.runlock import run_dir_lock
    with run_dir_lock(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.read()
""")


@pytest.mark.parametrize("argv", [["train", "--max-steps", "1", "--run-dir"], ["train", "--resume", "--run-dir"],
                                  ["activations", "x", "--out"]], ids=["train", "resume", "activations"])
def test_second_process_on_a_run_dir_is_refused(tmp_path, argv):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = subprocess.run([sys.executable, "-m", "lminspect", *argv, str(run)], capture_output=True, text=True,
                           env=env, timeout=300)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and f"in use by process {holder.pid}" in lines[0], r.stderr
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the lock with the holder: the directory is free again
    from lminspect.runlock import run_dir_lock

    with run_dir_lock(run):
        pass
