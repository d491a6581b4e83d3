"""Writers never destroy what they read, and the edges of the machine (a read-only folder, a full
disk, a full or closed stdout) end in one line, not a traceback; each class through the real CLI."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lminspect.cli import app

pytestmark = pytest.mark.xdist_group("reliability")
ROOT = Path(__file__).resolve().parents[1]


def _one_line(r, *needles: str) -> str:
    assert r.exit_code == 2, (r.output, r.exception)
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("lminspect: error: "), r.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def _snapshot(p: Path) -> dict[str, bytes]:
    return {str(f.relative_to(p)): f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file()}


@pytest.fixture
def model(tmp_path, tiny_llama_dir) -> Path:
    d = tmp_path / "m"
    shutil.copytree(tiny_llama_dir, d)
    (d / "q.gguf").write_bytes(b"GGUF")  # an input file inside the folder
    (d / "notes.txt").write_text("mine\n")
    return d


# (name, argv given the model folder m, what the error must say); every one with --overwrite
OWN_INPUT = [
    ("convert-into-its-folder", lambda m: ["convert", str(m / "q.gguf"), str(m), "--overwrite"], "contains"),
    ("export-over-itself", lambda m: ["stitch", "export", str(m), str(m), "--plan", "0-1", "--overwrite"], "is the input"),
    ("export-over-a-parent", lambda m: ["stitch", "export", str(m), str(m.parent), "--plan", "0-1", "--overwrite"],
     "contains"),
    ("export-inside", lambda m: ["stitch", "export", str(m), str(m / "sub"), "--plan", "0-1", "--overwrite"],
     "is inside"),
    ("export-through-symlink", lambda m: ["stitch", "export", str(m), str(_link(m)), "--plan", "0-1", "--overwrite"],
     "is the input"),
    ("grow-over-itself", lambda m: ["grow", str(m), "--out", str(m), "--layers", "+1", "--overwrite"], "is the input"),
    ("lens-over-config", lambda m: ["lens", str(m), "hi", "--out", str(m / "config.json"), "--overwrite"],
     "is inside"),
    ("dla-over-config", lambda m: ["dla", str(m), "hi", "--target", "a", "--out",
                                   str(m / "config.json"), "--overwrite"], "is inside"),
    ("make-mc-over-corpus", lambda m: ["data", "make-mc", str(m / "notes.txt"), "--out", str(m / "notes.txt"),
                                       "--overwrite"], "is the input"),
    ("attention-into-model", lambda m: ["attention", str(m), "hi", "--out", str(m),
                                        "--overwrite"], "is the input"),
    ("activations-over-model", lambda m: ["activations", str(m), "--out", str(m), "--overwrite"], "is the input"),
    ("stats-save-over-model", lambda m: ["stats", str(m), "--by-layer", "std", "--save", str(m / "x.png"),
                                         "--overwrite"], None),
]


def _link(m: Path) -> Path:
    link = m.parent / "link"
    link.symlink_to(m)
    return link


@pytest.mark.parametrize(("name", "argv", "says"), OWN_INPUT, ids=[c[0] for c in OWN_INPUT])
def test_writer_never_replaces_its_own_input(tmp_path, model, name, argv, says):
    before = _snapshot(tmp_path)
    r = CliRunner().invoke(app, argv(model))
    if says is None:  # a new file beside the inputs replaces nothing: allowed
        assert r.exit_code == 0, r.output
        return
    line = _one_line(r, says, "--overwrite does not change that")
    assert "input" in line
    after = _snapshot(tmp_path)
    assert after == before, "a refused writer changed something"
    assert not (model / ".lminspect.lock").exists()


def test_train_init_from_its_own_run_dir(tmp_path, tiny_llama_dir):
    run = tmp_path / "run"
    shutil.copytree(tiny_llama_dir, run)
    before = _snapshot(run)
    r = CliRunner().invoke(app, ["train", "--exp", "llamaish", "--init-from", str(run), "--run-dir", str(run),
                                 "--max-steps", "1"])
    _one_line(r, "--run-dir", "is the input")
    assert _snapshot(run) == before


# ---- a read-only destination: refused before any work
@pytest.fixture
def read_only(monkeypatch):
    """Every probe for writability fails as on a read-only mount (root ignores chmod)."""
    from lminspect import fsutil

    real_open = os.open

    def fake_open(path, flags, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        if ".lminspect-probe." in os.fspath(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(fsutil.os, "open", fake_open)


READ_ONLY = [
    ("export", lambda m, o: ["stitch", "export", str(m), str(o), "--plan", "0-1"]),
    ("lens", lambda m, o: ["lens", str(m), "hi", "--out", str(o / "l.json")]),
    ("sweep", lambda m, o: ["stitch", "sweep", str(m), "--eval", "cloze", "--out", str(o)]),
    ("convert", lambda m, o: ["convert", str(m / "q.gguf"), str(o)]),
    ("make-mc", lambda m, o: ["data", "make-mc", "builtin", "--out", str(o / "mc.jsonl")]),
    ("plot-save", lambda m, o: ["plot", str(m), "--save", str(o / "p.png")]),
]


@pytest.mark.usefixtures("read_only")
@pytest.mark.parametrize(("name", "argv"), READ_ONLY, ids=[c[0] for c in READ_ONLY])
def test_read_only_destination_is_one_line_before_work(tmp_path, model, name, argv):
    out = tmp_path / "ro"
    out.mkdir()
    r = CliRunner().invoke(app, argv(model, out))
    _one_line(r, "read-only file system", "nothing was computed")
    assert list(out.iterdir()) == []


def test_really_unwritable_folder_when_there_is_one(tmp_path, tiny_llama_dir):
    """/sys refuses new files even to root in a container: the real probe, no monkeypatch."""
    probe = Path("/sys/lminspect-probe-test")
    try:
        probe.touch()
    except OSError:
        pass
    else:
        probe.unlink()
        pytest.skip("/sys is writable here")
    r = CliRunner().invoke(app, ["stitch", "export", str(tiny_llama_dir), "/sys/lminspect-out", "--plan", "0-1"])
    _one_line(r, "/sys", "not writable")


# ---- a full disk: one line with the path and the size; the old content intact
def _limited(fsize: int):  # noqa: ANN202
    def pre() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return pre


def _cli(*argv: str, fsize: int | None = None, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:  # noqa: ANN001
    return subprocess.run([sys.executable, "-m", "lminspect", *argv], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=300,
                          preexec_fn=_limited(fsize) if fsize else None)


def test_full_disk_export_overwrite_keeps_old(tmp_path, tiny_llama_dir):
    out = tmp_path / "exp"
    assert _cli("stitch", "export", str(tiny_llama_dir), str(out), "--plan", "0-1").returncode == 0
    before = _snapshot(out)
    r = _cli("stitch", "export", str(tiny_llama_dir), str(out), "--plan", "0,1,2,3", "--overwrite", fsize=100_000)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(out) in lines[0] and "no room" in lines[0] and "needs about" in lines[0] and "file-size limit" in lines[0]
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_full_disk_activations_state(tmp_path, tiny_llama_dir):
    r = _cli("activations", str(tiny_llama_dir), "--out", str(tmp_path / "acts"), "--tokens", "500", "--seq-len", "64",
             fsize=10_000)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert "no room" in lines[-1] and str(tmp_path / "acts") in lines[-1]


# ---- standard output full or closed
def test_stdout_full_is_one_line(tiny_llama_dir):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with open("/dev/full", "w") as full:
        r = _cli("inspect", str(tiny_llama_dir), stdout=full)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "standard output" in r.stderr, r.stderr


def test_stdout_closed_is_quiet(tiny_llama_dir):
    p = subprocess.Popen([sys.executable, "-m", "lminspect", "inspect", str(tiny_llama_dir)],
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader went away (| head -0)
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) in (0, 1)
    assert "Traceback" not in err and "Exception ignored" not in err, err


# ---- markup in user text
@pytest.mark.parametrize("argv", [
    ["dla", "MODEL", "hi there", "--target", " a", "--baseline", " a"],
    ["dla", "MODEL", "[/] [bold]", "--target", "[/]"],
    ["lens", "MODEL", "[/dim] x", "--target", "[/]"],
])
def test_markup_in_tokens_and_text_is_text(tiny_llama_dir, argv):
    r = CliRunner().invoke(app, [str(tiny_llama_dir) if a == "MODEL" else a for a in argv])
    assert r.exit_code == 0, (r.output, r.exception)


# ---- diff of a model and its grown self: both sides cut alike
def test_array_diff_contiguous_against_a_block():
    from lminspect.compare.diff import CHUNK, array_diff

    rng = np.random.default_rng(0)
    a = rng.standard_normal((CHUNK // 500 + 40, 576)).astype(np.float32)  # > CHUNK elements, rows of 576
    big = np.zeros((a.shape[0], 1152), np.float32)
    big[:, :576] = a * 1.5
    d = array_diff(a, big[:, :576])
    assert d["cosine"] == pytest.approx(1.0) and d["rel_change"] == pytest.approx(0.5, rel=1e-6)


# ---- the REPL's first call inside inference mode
def test_repl_logits_first_on_stored_weights(tmp_path, tiny_llama_dir):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_weights_gguf import write_llama_gguf

    import lminspect as li

    g = write_llama_gguf(tiny_llama_dir, tmp_path / "q8.gguf")
    m = li.open(str(g))
    out = m.logits("Hi")  # the engine built inside logits' inference_mode
    assert np.isfinite(out).all()


# ---- a tokenizer larger than the model
def test_prompt_ids_past_the_vocab_are_one_line(tmp_path, tiny_llama_dir):
    import json

    d = tmp_path / "m"
    shutil.copytree(tiny_llama_dir, d)
    tj = json.loads((d / "tokenizer.json").read_text())
    vocab = json.loads((d / "config.json").read_text())["vocab_size"]
    tj["added_tokens"].append({"id": vocab + 50, "content": "<big>", "single_word": False, "lstrip": False,
                               "rstrip": False, "normalized": False, "special": True})
    (d / "tokenizer.json").write_text(json.dumps(tj))
    for argv in (["generate", str(d), "<big>", "-n", "2"], ["lens", str(d), "a <big>"],
                 ["attention", str(d), "a <big>"]):
        r = CliRunner().invoke(app, argv)
        _one_line(r, "token id", f"outside the model's vocabulary of {vocab}")


def test_n_beyond_the_context_is_said_up_front(tiny_llama_dir):
    r = CliRunner().invoke(app, ["generate", str(tiny_llama_dir), "hi", "-n", "100000000"])
    assert r.exit_code == 0, r.output
    assert "lminspect: warning: -n 100000000 is more than the model's context" in r.output


def test_refused_folder_keeps_no_lock_file(tmp_path, tiny_llama_dir):
    """activations into the user's own folder is refused; the lock it took there goes again."""
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("mine\n")
    r = CliRunner().invoke(app, ["activations", str(tiny_llama_dir), "--out", str(d), "--tokens", "100",
                                 "--seq-len", "32"])
    _one_line(r, str(d))
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt"]


def test_unusable_cache_folder(tmp_path, tiny_llama_dir, monkeypatch):
    """Caches only save time: stats and diff go on without one; fetch, which needs it, says so."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("LMINSPECT_CACHE", str(blocker / "cache"))  # mkdir under a file fails
    for argv in (["stats", str(tiny_llama_dir), "--no-svd"], ["diff", str(tiny_llama_dir), str(tiny_llama_dir)]):
        r = CliRunner().invoke(app, argv)
        assert r.exit_code == 0, (r.output, r.exception)
    r = CliRunner().invoke(app, ["fetch", "smollm2"])
    _one_line(r, "cache folder", "LMINSPECT_CACHE")


@pytest.mark.parametrize("out", [".", "..", "./"])
def test_the_current_folder_is_never_swapped(tmp_path, tiny_llama_dir, monkeypatch, out):
    """``stitch export m . --overwrite`` would replace the folder the command runs in: refused."""
    here = tmp_path / "here"
    here.mkdir()
    (here / "keep.txt").write_text("mine\n")
    monkeypatch.chdir(here)
    r = CliRunner().invoke(app, ["stitch", "export", str(tiny_llama_dir), out, "--plan", "0-1", "--overwrite"])
    _one_line(r, "current folder")
    assert sorted(p.name for p in here.iterdir()) == ["keep.txt"]
