"""A writer killed (SIGKILL) at any step of an atomic replace loses nothing: the target holds the
old or the new content, complete, and the next writer recovers. The kill is delivered
deterministically by the fault hook of ``fsutil`` (``LMINSPECT_FAULT=STEP``), in both swap modes:
``renameat2(RENAME_EXCHANGE)`` and the two-rename fallback (``LMINSPECT_NO_EXCHANGE=1``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("reliability")

ROOT = Path(__file__).resolve().parents[1]
DIR_STEPS = ["before-fsync", "before-rename", "between-renames", "before-cleanup"]
FILE_STEPS = ["before-fsync", "before-rename", "after-rename"]
MODES = {"exchange": {}, "two-renames": {"LMINSPECT_NO_EXCHANGE": "1"}}

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from lminspect import fsutil
    kind, target, text = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    if kind == "dir":
        with fsutil.atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text(text)
            (tmp / "sub").mkdir()
            (tmp / "sub" / "b.txt").write_text(text * 2)
    else:
        fsutil.atomic_write_text(target, text)
""")


def _env(mode: str, fault: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **MODES[mode]}
    env.pop("LMINSPECT_FAULT", None)
    if fault:
        env["LMINSPECT_FAULT"] = fault
    return env


def _write(kind: str, target: Path, text: str, mode: str, fault: str | None = None) -> int:
    return subprocess.run([sys.executable, "-c", WRITER, kind, str(target), text], env=_env(mode, fault),
                          capture_output=True, text=True, timeout=120).returncode


def _content(kind: str, target: Path) -> str | None:
    if kind == "file":
        return target.read_text() if target.is_file() else None
    if not target.is_dir():
        return None
    a, b = (target / "a.txt").read_text(), (target / "sub" / "b.txt").read_text()
    assert b == a * 2, "a folder mixing two versions"
    return a


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(("kind", "step"), [("dir", s) for s in DIR_STEPS] + [("file", s) for s in FILE_STEPS])
def test_kill_at_each_step_keeps_old_or_new(tmp_path, mode, kind, step):
    target = tmp_path / "out"
    assert _write(kind, target, "old", mode) == 0
    rc = _write(kind, target, "new", mode, fault=step)
    assert rc == -signal.SIGKILL, "the fault hook did not fire"
    # a reader that comes before any writer: the content is there, whole, unless the fallback was cut
    # between its renames (then the old copy waits beside it for the next writer)
    seen = _content(kind, target)
    if not (mode == "two-renames" and step == "between-renames" and kind == "dir"):
        assert seen in ("old", "new")
    # the next writer recovers: the old copy is never deleted while it is the only one
    from lminspect import fsutil

    if kind == "dir":
        fsutil.remove_stale_temps(target)
        assert _content(kind, target) in ("old", "new")
    assert _write(kind, target, "third", mode) == 0
    assert _content(kind, target) == "third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "leftovers of the killed writer"


def test_old_copy_restored_not_deleted(tmp_path):
    """A kill between the two renames leaves NAME missing and the old content only in the old
    copy: the next writer of NAME (check_output first) puts it back rather than deleting it."""
    target = tmp_path / "export"
    assert _write("dir", target, "precious", "two-renames") == 0
    assert _write("dir", target, "new", "two-renames", fault="between-renames") == -signal.SIGKILL
    assert not target.exists()
    (old,) = [p for p in tmp_path.iterdir() if p.name.endswith(".old")]
    assert (old / "a.txt").read_text() == "precious"
    from lminspect.errors import UserError
    from lminspect.fsutil import check_output

    with pytest.raises(UserError, match="not empty"):  # the restored export is the user's again
        check_output(target, kind="dir", overwrite=False, option="OUT_DIR")
    assert _content("dir", target) == "precious"


def test_legacy_old_copy_restored(tmp_path):
    """The ``.NAME.old`` of earlier versions is treated the same way: restored when NAME is missing."""
    from lminspect import fsutil

    old = tmp_path / ".out.old"
    old.mkdir()
    (old / "a.txt").write_text("x")
    fsutil.remove_stale_temps(tmp_path / "out")
    assert (tmp_path / "out" / "a.txt").read_text() == "x" and not old.exists()


def test_nth_occurrence_and_name_filter(tmp_path):
    """``STEP@NAME#N`` kills at the Nth time that step is reached for that name only."""
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        from lminspect import fsutil
        d = Path(sys.argv[1])
        for i in range(3):
            fsutil.atomic_write_text(d / "x", str(i))
            fsutil.atomic_write_text(d / "y", str(i))
    """)
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=_env("exchange", "before-rename@y#2"),
                       timeout=120)
    assert r.returncode == -signal.SIGKILL
    assert (tmp_path / "x").read_text() == "1" and (tmp_path / "y").read_text() == "0"


@pytest.mark.parametrize(("mode", "step"), [("two-renames", "between-renames"), ("exchange", "between-renames"),
                                           ("two-renames", "before-rename")])
def test_cli_export_overwrite_killed(tmp_path, tiny_llama_dir, mode, step):
    """The real writer: ``stitch export --overwrite`` killed at each step of its replace keeps the
    earlier export loadable, and the next export succeeds."""
    out = tmp_path / "exp"

    def export(plan: str, fault: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lminspect", "stitch", "export", str(tiny_llama_dir), str(out),
                               "--plan", plan, "--overwrite"], env=_env(mode, fault and f"{fault}@exp"),
                              capture_output=True, text=True, timeout=300)

    assert export("0-1").returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert export("0,0,1", step).returncode == -signal.SIGKILL
    from lminspect.fsutil import remove_stale_temps

    remove_stale_temps(out)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    if step in ("before-fsync", "before-rename"):
        assert after == before
    assert export("0,1,1").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_exchange_really_swaps(tmp_path):
    """The exchange mode above is the real renameat2 (not a silent fallback): a folder and a file
    trade names in one call."""
    from lminspect.fsutil import exchange

    (tmp_path / "a").mkdir()
    (tmp_path / "b").write_text("x")
    assert exchange(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "a").read_text() == "x" and (tmp_path / "b").is_dir()
