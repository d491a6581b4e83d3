"""lminspect.documents: every source kind, the numbering rules, start/limit, and bad input."""

from __future__ import annotations

import gzip
import json
import sys
import types
from pathlib import Path

import pytest

from lminspect.documents import BUILTIN_CORPORA, iter_documents, locate, read_documents
from lminspect.errors import UserError

ROWS = [{"text": "alpha doc", "id": 0}, {"text": "", "id": 1}, {"text": None, "id": 2},
        {"text": "delta doc", "id": 3}, {"text": "echo doc", "id": 4}]
TEXTS = ["alpha doc", "", "", "delta doc", "echo doc"]  # empty and null rows keep their index


def _write(path: Path, kind: str) -> Path:
    """``ROWS`` in format ``kind`` at ``path`` (with that suffix)."""
    path = path.with_suffix(kind)
    if kind in (".jsonl", ".ndjson"):
        path.write_text("\n".join(json.dumps(r) for r in ROWS[:2]) + "\n\n" + "\n".join(json.dumps(r) for r in ROWS[2:]))
    elif kind == ".gz":
        path = path.with_suffix(".jsonl.gz")
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in ROWS))
    elif kind == ".json":
        path.write_text(json.dumps(ROWS))
    elif kind == ".parquet":
        pa = pytest.importorskip("pyarrow")
        pq = pytest.importorskip("pyarrow.parquet")
        pq.write_table(pa.Table.from_pylist(ROWS), path, row_group_size=2)  # 3 row groups
    return path


@pytest.mark.parametrize("kind", [".jsonl", ".ndjson", ".gz", ".json", ".parquet"])
def test_row_formats_number_every_row_and_resume_at_start(tmp_path, kind):
    path = _write(tmp_path / "d", kind)
    assert [t for _, t in iter_documents(path)] == TEXTS
    assert list(iter_documents(str(path))) == list(enumerate(TEXTS))
    for start in range(len(TEXTS) + 2):  # past the end: nothing, no error (a finished epoch)
        assert list(iter_documents(path, start=start)) == list(enumerate(TEXTS))[start:]
    assert read_documents(path) == ["alpha doc", "delta doc", "echo doc"]
    assert read_documents(path, limit=2) == ["alpha doc", "delta doc"]
    with pytest.raises(UserError, match=r"d\..*: (row 0 has )?no 'body' field \(fields: text, id\)"):
        list(iter_documents(path, field="body"))


def test_txt_blocks_at_two_blank_lines(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"\n\ndoc one\nstill one\n\nand one\n\n\ndoc two\r\n \r\n\t\r\ndoc three\n\n\n\n")
    docs = ["doc one\nstill one\n\nand one", "doc two", "doc three"]  # a line of spaces is blank; CRLF too
    assert read_documents(p) == docs
    assert list(iter_documents(p, start=1)) == [(1, "doc two"), (2, "doc three")]
    assert read_documents(p, limit=1) == docs[:1]


def test_txt_without_block_separators_splits_paragraphs(tmp_path):
    p = tmp_path / "notes.md"  # .md is text when named directly
    p.write_text("Para one.\nLine two.\n\nPara two.\n\nPara three.\n")
    assert read_documents(p) == ["Para one.\nLine two.", "Para two.", "Para three."]
    one = tmp_path / "one.txt"
    one.write_text("just one document\n\n\n")
    assert list(iter_documents(one)) == [(0, "just one document")]


def test_shipped_corpora_keep_their_numbering():
    for name, path in BUILTIN_CORPORA.items():
        raw = path.read_text(encoding="utf-8")
        old = [d.strip() for d in raw.split("\n\n\n") if d.strip()]  # the rule the checkpoints were made with
        assert [t for _, t in iter_documents(f"builtin:{name}")] == old
    train = [t for _, t in iter_documents(BUILTIN_CORPORA["train"])]
    assert [t for _, t in iter_documents("builtin")] == train == [t for _, t in iter_documents("default")]
    assert read_documents("builtin") == read_documents(BUILTIN_CORPORA["eval"])  # evaluation's builtin
    assert read_documents("builtin", builtin="train")[:3] == train[:3]
    assert next(iter_documents("builtin", start=1830)) == (1830, train[1830])
    with pytest.raises(UserError, match="unknown builtin corpus 'nope'"):
        list(iter_documents("builtin:nope"))


def test_folder_reads_files_in_path_order_numbered_on(tmp_path):
    d = tmp_path / "corpus"
    (d / "b").mkdir(parents=True)
    (d / "a.txt").write_text("a1\n\na2\n")
    (d / "b" / "c.jsonl").write_text('{"text": "c1"}\n{"text": "c2"}\n')
    (d / "b.txt").write_text("b1\n")
    (d / "README.md").write_text("# not a document\n")
    (d / "notes.csv").write_text("x,y\n")
    (d / ".cache").mkdir()
    (d / ".cache" / "z.txt").write_text("hidden\n")
    docs = [(0, "a1"), (1, "a2"), (2, "c1"), (3, "c2"), (4, "b1")]  # sorted paths: a.txt, b/c.jsonl, b.txt
    assert list(iter_documents(d)) == docs
    for start in range(6):
        assert list(iter_documents(d, start=start)) == docs[start:]


def test_list_source_and_limit():
    assert list(iter_documents(["x", "", "z"], start=1)) == [(1, ""), (2, "z")]
    assert read_documents(("x", " ", "z")) == ["x", "z"]
    assert read_documents(["x", "y", "z"], limit=2) == ["x", "y"]
    with pytest.raises(UserError, match="limit must be at least 1"):
        read_documents(["x"], limit=0)
    with pytest.raises(UserError, match="the given texts: no text found"):
        read_documents(["", "  "])


def _one_line(exc: pytest.ExceptionInfo[UserError], *parts: str) -> None:
    msg = exc.value.message
    assert "\n" not in msg and all(p in msg for p in parts), msg


def test_bad_input_is_one_line_naming_the_file(tmp_path):
    for missing in (str(tmp_path / "none.txt"), tmp_path / "none", "./none", "none.jsonl", "~/none/x"):
        with pytest.raises(UserError, match="file not found") as e:
            list(iter_documents(missing))
        _one_line(e, "none")
    (tmp_path / "t.csv").write_text("a,b\n")
    with pytest.raises(UserError, match="unsupported file type '.csv'") as e:
        read_documents(tmp_path / "t.csv")
    _one_line(e, "t.csv")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(UserError) as e:
        list(iter_documents(bad))
    _one_line(e, "bad.jsonl:2", "not valid JSON")
    assert list(iter_documents(bad, start=5)) == []  # rows before start are counted, not parsed
    (tmp_path / "obj.json").write_text('{"text": "x"}')
    with pytest.raises(UserError, match="expected a JSON list") as e:
        read_documents(tmp_path / "obj.json")
    _one_line(e, "obj.json")
    (tmp_path / "lines.json").write_text('{"text": "x"}\n{"text": "y"}\n')  # JSON lines in a .json
    assert read_documents(tmp_path / "lines.json") == ["x", "y"]
    (tmp_path / "num.jsonl").write_text('{"text": 5}\n')
    with pytest.raises(UserError, match="field 'text' is a int, not text") as e:
        read_documents(tmp_path / "num.jsonl")
    _one_line(e, "num.jsonl:1", "row 0")
    (tmp_path / "str.jsonl").write_text('"just a string"\n')
    with pytest.raises(UserError, match="not an object"):
        read_documents(tmp_path / "str.jsonl")
    (tmp_path / "broken.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(UserError, match="broken.jsonl.gz: cannot be read"):
        read_documents(tmp_path / "broken.jsonl.gz")


def test_empty_sources(tmp_path):
    (tmp_path / "empty.txt").write_text("\n \n\n")
    with pytest.raises(UserError, match="empty.txt: no documents") as e:
        list(iter_documents(tmp_path / "empty.txt"))
    _one_line(e)
    (tmp_path / "blank.jsonl").write_text('{"text": ""}\n{"text": null}\n')
    assert list(iter_documents(tmp_path / "blank.jsonl")) == [(0, ""), (1, "")]
    with pytest.raises(UserError, match="blank.jsonl: no text found"):
        read_documents(tmp_path / "blank.jsonl")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "x.csv").write_text("a\n")
    with pytest.raises(UserError, match="dir: no .*files in this folder"):
        list(iter_documents(tmp_path / "dir"))


def test_parquet_without_the_column(tmp_path):
    p = _write(tmp_path / "d", ".parquet")
    with pytest.raises(UserError, match=r"d.parquet: no 'body' field \(fields: text, id\)"):
        read_documents(p, field="body")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(UserError, match="junk.parquet: cannot read parquet"):
        read_documents(tmp_path / "junk.parquet")


def test_locate_tells_paths_from_hub_ids(tmp_path):
    assert locate("org/name") == "org/name"
    assert locate("hf:org/name:cfg") == "org/name:cfg"
    assert locate(str(tmp_path)) == tmp_path
    assert locate("builtin", builtin="eval") == BUILTIN_CORPORA["eval"]
    with pytest.raises(UserError, match="file not found"):
        locate("/nonexistent-corpus")


class _FakeStream:
    """What ``datasets.load_dataset(..., streaming=True)`` returns, as far as documents use it."""

    def __init__(self, rows: list, fail_at: int | None = None) -> None:
        self.rows, self.fail_at = rows, fail_at

    def skip(self, n: int) -> _FakeStream:
        return _FakeStream(self.rows[n:], None if self.fail_at is None else self.fail_at - n)

    def __iter__(self):
        for k, r in enumerate(self.rows):
            if k == self.fail_at:
                raise ConnectionError("Couldn't reach the Hub\nsecond line")
            yield r


def _fake_datasets(monkeypatch: pytest.MonkeyPatch, load) -> list:
    calls: list = []

    def load_dataset(name, config=None, *, split, streaming):
        calls.append((name, config, split, streaming))
        return load(name)

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_hub_dataset_streams_with_split_config_and_start(monkeypatch):
    calls = _fake_datasets(monkeypatch, lambda name: _FakeStream([{"text": f"row {i}", "n": i} for i in range(5)]))
    assert list(iter_documents("org/data:cfg", split="validation", start=3)) == [(3, "row 3"), (4, "row 4")]
    assert read_documents("hf:org/data", limit=2) == ["row 0", "row 1"]
    assert calls == [("org/data", "cfg", "validation", True), ("org/data", None, "test", True)]
    with pytest.raises(UserError, match=r"dataset 'org/data': row 0 has no 'body' field \(fields: text, n\)"):
        read_documents("org/data", field="body")


def test_hub_offline_is_one_clear_error(monkeypatch):
    def offline(name):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)")

    _fake_datasets(monkeypatch, offline)
    with pytest.raises(UserError) as e:
        list(iter_documents("org/data"))
    _one_line(e, "dataset 'org/data' (split 'train') cannot be opened", "ConnectionError", "Couldn't reach")
    assert "offline?" in e.value.hint
    _fake_datasets(monkeypatch, lambda name: _FakeStream([{"text": "a"}, {"text": "b"}], fail_at=1))
    it = iter_documents("org/data")
    assert next(it) == (0, "a")
    with pytest.raises(UserError, match="cannot be opened: ConnectionError: Couldn't reach the Hub$"):
        next(it)  # a connection lost mid-stream: the same one line


def test_cli_turns_bad_corpus_into_exit_2(tmp_path):
    from typer.testing import CliRunner

    from lminspect.cli import app

    data = tmp_path / "d.jsonl"
    data.write_text('{"content": "hello"}\n')
    r = CliRunner().invoke(app, ["data", "make-mc", str(data), "--out", str(tmp_path / "o.jsonl")])
    assert r.exit_code == 2 and "d.jsonl:1: row 0 has no 'text' field (fields: content)" in r.output


def _dataset_repo(root: Path) -> Path:
    """A dataset repo as on the hub (data/<split>.jsonl), on local disk."""
    (root / "data").mkdir(parents=True)
    for split, n in (("train", 12), ("validation", 4)):
        rows = [json.dumps({"text": f"{split} document {i}", "id": i}) for i in range(n)]
        (root / "data" / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_hub_path_through_the_real_datasets_library(tmp_path, monkeypatch):
    """The hub code path with the real ``datasets`` (no stand-in): ``load_dataset`` resolves a
    local repo folder exactly as it would a downloaded one, streaming, with splits."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # read at import
    repo = _dataset_repo(tmp_path / "repo")
    ref = f"hf:{repo}"
    assert locate(ref) == str(repo)  # "hf:" sends even an existing folder to datasets
    assert list(iter_documents(ref, split="train", start=10)) == [(10, "train document 10"), (11, "train document 11")]
    assert read_documents(ref, split="validation", limit=2) == ["validation document 0", "validation document 1"]
    with pytest.raises(UserError) as e:
        list(iter_documents(ref, split="nosuchsplit"))
    _one_line(e, str(repo), "nosuchsplit")
