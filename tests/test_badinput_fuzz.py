"""A table of bad inputs, each run through the real CLI: every one must end in exit code 2 and ONE
line ``lminspect: error: ...`` that names what is wrong, with no traceback and nothing written.

Each case builds its bad input in a temp folder (``B``) and returns the argv and a fragment the
error line must contain. The tiny Llama of conftest stands in wherever a model is needed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lminspect.cli import app

pytestmark = pytest.mark.xdist_group("badinput")


class B:
    """A temp folder and the tiny model; helpers that make bad files in it."""

    def __init__(self, root: Path, model: Path) -> None:
        self.root, self.model = root, str(model)

    def file(self, name: str, data: str | bytes) -> str:
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        return str(p)

    def fifo(self) -> str:
        p = self.root / "fifo"
        os.mkfifo(p)
        return str(p)

    def loop(self) -> str:
        p = self.root / "loop"
        os.symlink(p, p)
        return str(p)

    def model_with(self, **config) -> str:
        d = self.root / "model"
        shutil.copytree(self.model, d)
        c = json.loads((d / "config.json").read_text())
        c.update(config)
        (d / "config.json").write_text(json.dumps(c))
        return str(d)

    def model_config_bytes(self, data: bytes) -> str:
        d = self.root / "model"
        shutil.copytree(self.model, d)
        (d / "config.json").write_bytes(data)
        return str(d)

    def run_dir(self, config: str | bytes | None, stats: bytes | None = None) -> str:
        d = self.root / "run"
        d.mkdir()
        if config is not None:
            (d / "config.json").write_bytes(config if isinstance(config, bytes) else config.encode())
        if stats is not None:
            (d / "stats.jsonl").write_bytes(stats)
        return str(d)

    def out(self, name: str = "out") -> str:
        return str(self.root / name)


DEEP = "[" * 50_000 + "]" * 50_000
_DEEP_JSON = b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
DEEP_HEADER = len(_DEEP_JSON).to_bytes(8, "little") + _DEEP_JSON
BOMB9 = "a0: &a0 [x,x,x,x,x,x,x,x,x,x]\n" + "".join(  # 10**9 leaves from 9 aliases' worth of nesting
    f"a{k + 1}: &a{k + 1} [{', '.join([f'*a{k}'] * 10)}]\n" for k in range(8)) + "plan: *a8\n"
BOMB = "a0: &a0 [x,x,x,x,x,x,x,x,x,x]\n" + "".join(  # 10**16 leaves from 150 aliases
    f"a{k + 1}: &a{k + 1} [{', '.join([f'*a{k}'] * 10)}]\n" for k in range(15))


def mc(b: B, row: dict | bytes) -> str:
    return b.file("mc.jsonl", row if isinstance(row, bytes) else json.dumps(row) + "\n")


def _train(*args: str) -> Callable[[B], list[str]]:
    return lambda b: ["train", *args, "--run-dir", b.out("run"), "--max-steps", "1"]


def _sweep(row: dict | bytes) -> Callable[[B], list[str]]:
    return lambda b: ["stitch", "sweep", b.model, "--eval", mc(b, row), "--plans", "baseline", "--out", b.out()]


CASES: list[tuple[str, Callable[[B], list[str]], str]] = [
    # ---- files that are not what they seem
    ("inspect-fifo", lambda b: ["inspect", b.fifo()], "FIFO"),
    ("inspect-symlink-loop", lambda b: ["inspect", b.loop()], "symlink loop"),
    ("stats-fifo", lambda b: ["stats", b.fifo()], "FIFO"),
    ("generate-loop", lambda b: ["generate", b.loop(), "hi"], "symlink loop"),
    ("convert-src-folder", lambda b: ["convert", str(b.root), b.out()], "is a folder"),
    ("convert-src-fifo", lambda b: ["convert", b.fifo(), b.out()], "FIFO"),
    ("convert-src-missing", lambda b: ["convert", b.out("nope.gguf"), b.out()], "no such file"),
    ("plan-file-folder", lambda b: ["stitch", "show", "--plan", str(b.root) + "/"], "is a folder"),
    ("plan-file-fifo", lambda b: ["stitch", "show", "--plan", b.fifo()], "FIFO"),
    ("train-plan-folder", lambda b: ["train", "--train-plan", str(b.root), "--run-dir", b.out("r")], "is a folder"),
    # ---- text that is not UTF-8: file and byte offset
    ("plan-yaml-not-utf8", lambda b: ["stitch", "show", "--plan", b.file("p.yaml", b"slices:\n - \xff")], "offset 11"),
    ("train-plan-not-utf8", lambda b: ["train", "--train-plan", b.file("p.json", b"{\xfe"), "--run-dir", b.out("r")],
     "offset 1"),
    ("corpus-not-utf8", lambda b: ["data", "make-mc", b.file("c.txt", b"ab \xff"), "--out", b.out("m.jsonl")],
     "offset 3"),
    ("train-data-not-utf8", _train("--data", "DATA"), "not UTF-8"),
    ("mc-not-utf8", _sweep(b'{"ctx": "\xff"}\n'), "not UTF-8"),
    ("run-config-not-utf8", lambda b: ["plot", b.run_dir(b"\xff{}", b'{"step": 1, "tokens": 1, "loss": 1}\n')], "not UTF-8"),
    ("model-config-not-utf8", lambda b: ["generate", b.model_config_bytes(b"\xff{}"), "hi"], "config.json"),
    # ---- JSON / YAML too deep or too big
    ("plan-json-deep", lambda b: ["stitch", "show", "--plan", b.file("p.json", DEEP)], "recursion"),
    ("plan-yaml-alias-bomb", lambda b: ["stitch", "show", "--plan", b.file("p.yaml", BOMB)], "aliases"),
    ("model-config-deep", lambda b: ["generate", b.model_config_bytes(DEEP.encode()), "hi"], "config.json"),
    ("run-config-deep", lambda b: ["plot", b.run_dir(DEEP, b'{"step": 1, "tokens": 1, "loss": 1}\n')], "not valid JSON"),
    ("mc-json-deep", lambda b: ["stitch", "sweep", b.model, "--eval", b.file("mc.json", DEEP), "--out", b.out()],
     "nested too deeply"),
    # ---- model config values
    ("config-heads-zero", lambda b: ["generate", b.model_with(num_attention_heads=0), "hi"], "config"),
    ("config-layers-negative", lambda b: ["generate", b.model_with(num_hidden_layers=-3), "hi"], "n_layer = -3"),
    ("config-layers-billion", lambda b: ["generate", b.model_with(num_hidden_layers=10**9), "hi"], "10,000"),
    ("config-width-text", lambda b: ["generate", b.model_with(hidden_size="wide"), "hi"], "bad value"),
    ("config-kv-not-dividing", lambda b: ["generate", b.model_with(num_key_value_heads=3), "hi"], "kv heads"),
    ("config-vocab-zero", lambda b: ["generate", b.model_with(vocab_size=0), "hi"], "vocab_size = 0"),
    ("config-eps-negative", lambda b: ["generate", b.model_with(rms_norm_eps=-1.0), "hi"], "norm_eps"),
    ("config-not-object", lambda b: ["generate", b.model_config_bytes(b"[1, 2]"), "hi"], "not a JSON object"),
    # ---- train options
    ("train-lr-nan", _train("--lr", "nan"), "--lr nan"),
    ("train-lr-inf", _train("--lr", "inf"), "--lr inf"),
    ("train-lr-zero", _train("--lr", "0"), "--lr"),
    ("train-wd-negative", _train("--weight-decay", "-0.1"), "--weight-decay"),
    ("train-wd-nan", _train("--weight-decay", "nan"), "--weight-decay"),
    ("train-clip-inf", _train("--grad-clip", "inf"), "--grad-clip"),
    ("train-steps-negative", lambda b: ["train", "--max-steps", "-1", "--run-dir", b.out("r")], "--max-steps"),
    ("train-steps-zero", lambda b: ["train", "--max-steps", "0", "--run-dir", b.out("r")], "--max-steps"),
    ("train-tokens-negative", _train("--max-tokens", "-5"), "--max-tokens"),
    ("train-eval-negative", _train("--eval-every", "-1"), "--eval-every"),
    ("train-save-negative", _train("--save-every", "-1"), "--save-every"),
    ("train-batch-zero", _train("--batch-size", "0"), "--batch-size"),
    ("train-mini-negative", _train("--mini-batch-size", "-2"), "--mini-batch-size"),
    ("train-seq-huge", _train("--seq-len", "100000000"), "--seq-len"),
    ("train-batch-huge-memory", _train("--batch-size", "100000", "--seq-len", "100000"), "memory"),
    ("train-device-name", _train("--device", "gpu7"), "--device 'gpu7'"),
    ("train-device-cuda9", _train("--device", "cuda:9"), "--device cuda:9"),
    ("train-amp", _train("--amp", "fp8"), "--amp"),
    ("train-optimizer", _train("--optimizer", "sgdx"), "--optimizer"),
    ("train-set-text-for-int", _train("--set", "n_layer=abc"), "n_layer takes int"),
    ("train-set-float-for-int", _train("--set", "n_layer=1.5"), "n_layer takes int"),
    ("train-set-bool-for-int", _train("--set", "dim=true"), "dim takes int"),
    ("train-set-zero", _train("--set", "dim=0"), "dim=0"),
    ("train-set-heads-not-dividing", _train("--set", "n_head=7"), "not divisible by 7 heads"),
    ("train-set-layers-billion", _train("--set", "n_layer=1000000000"), "10,000"),
    ("train-set-width-huge", _train("--set", "dim=400000", "--set", "n_head=1"), "dim"),
    ("train-set-unknown", _train("--set", "bogus=1"), "unknown model option"),
    ("train-set-no-equals", _train("--set", "n_layer"), "KEY=VALUE"),
    ("train-set-eps-nan", _train("--set", "norm_eps=NaN"), "norm_eps"),
    ("train-exp-unknown", _train("--exp", "nope"), "unknown experiment"),
    ("train-plan-unknown", _train("--train-plan", "nope"), "unknown plan"),
    ("train-plan-steps-empty", lambda b: ["train", "--train-plan", b.file("p.json", '{"steps": []}'), "--run-dir",
                                          b.out("r")], "steps"),
    ("train-run-dir-is-file", lambda b: ["train", "--run-dir", b.file("f", "x"), "--max-steps", "1"],
     "a folder is wanted"),
    # ---- run directories
    ("resume-no-config", lambda b: ["train", "--resume", "--run-dir", b.run_dir(None, b"")], "no config.json"),
    ("resume-broken-config", lambda b: ["train", "--resume", "--run-dir", b.run_dir("{broken")], "not valid JSON"),
    ("resume-config-without-train", lambda b: ["train", "--resume", "--run-dir", b.run_dir("{}")], "'train'"),
    ("resume-config-bad-lr", lambda b: ["train", "--resume", "--run-dir",
                                        b.run_dir(json.dumps({"train": {"exp": "gpt2ish", "lr": "fast"}}))], "--lr"),
    ("resume-contradicting-flag", lambda b: ["train", "--resume", "--lr", "0.5", "--run-dir",
                                             b.run_dir(json.dumps({"train": {"exp": "gpt2ish", "lr": 0.001}}))],
     "contradict"),
    ("train-existing-run", lambda b: ["train", "--run-dir", b.run_dir("{}", b'{"step": 1}\n')], "--resume"),
    ("plot-width-negative", lambda b: ["plot", b.run_dir("{}", b'{"step": 1, "tokens": 1, "loss": 1}\n'),
                                       "--width", "-5"], "--width"),
    ("plot-height-huge", lambda b: ["plot", b.run_dir("{}", b'{"step": 1, "tokens": 1, "loss": 1}\n'),
                                    "--height", "100000"], "--height"),
    ("plot-smooth-negative", lambda b: ["plot", b.run_dir("{}", b'{"step": 1, "tokens": 1, "loss": 1}\n'),
                                        "--smooth", "-1"], "--smooth"),
    ("plot-not-a-run", lambda b: ["plot", str(b.root)], "not a run directory"),
    ("plot-config-not-object", lambda b: ["plot", b.run_dir("[1]", b'{"step": 1, "tokens": 1, "loss": 1}\n')], "not a JSON object"),
    ("plot-only-nan", lambda b: ["plot", b.run_dir("{}", b'{"step": 1, "tokens": 1, "loss": NaN}\n')], "no 'loss'"),
    ("plot-unknown-metric", lambda b: ["plot", b.run_dir("{}", b'{"step": 1, "tokens": 1, "loss": 1}\n'), "--metric", "x"],
     "no metric"),
    ("acts-show-not-results", lambda b: ["activations-show", str(b.root)], "not an activations results dir"),
    ("acts-show-corrupt-npz", lambda b: ["activations-show", str(Path(b.file(
        "acts/stats.npz", b"PK\x03\x04garbage")).parent), ] if b.file(
        "acts/index.json", '{"format": "lminspect-activations"}') else [], "--overwrite"),
    ("acts-show-corrupt-index", lambda b: ["activations-show", str(Path(b.file("acts/index.json", "{x")).parent)],
     "--overwrite"),
    # ---- multiple-choice files
    ("mc-label-out-of-range", _sweep({"ctx": "a", "endings": ["x", "y"], "label": 5}), "out of range"),
    ("mc-label-negative", _sweep({"ctx": "a", "endings": ["x", "y"], "label": -1}), "out of range"),
    ("mc-label-text", _sweep({"ctx": "a", "endings": ["x", "y"], "label": "z"}), "'label'"),
    ("mc-label-fraction", _sweep({"ctx": "a", "endings": ["x", "y"], "label": 0.5}), "'label'"),
    ("mc-label-missing", _sweep({"ctx": "a", "endings": ["x", "y"]}), "'label'"),
    ("mc-empty-endings", _sweep({"ctx": "a", "endings": ["", ""], "label": 0}), "is empty"),
    ("mc-blank-ending", _sweep({"ctx": "a", "endings": ["x", "  "], "label": 0}), "is empty"),
    ("mc-one-ending", _sweep({"ctx": "a", "endings": ["x"], "label": 0}), "at least two"),
    ("mc-no-endings", _sweep({"ctx": "a", "label": 0}), "'endings'"),
    ("mc-no-ctx", _sweep({"endings": ["x", "y"], "label": 0}), "'ctx'"),
    ("mc-not-json", _sweep(b"not json\n"), "not valid JSON"),
    ("mc-wrong-suffix", lambda b: ["stitch", "sweep", b.model, "--eval", b.file("mc.csv", "a,b"), "--out", b.out()],
     "mc.csv"),
    # ---- --limit and other counts
    ("sweep-limit-zero", lambda b: ["stitch", "sweep", b.model, "--eval", "cloze", "--limit", "0"], "--limit 0"),
    ("sweep-limit-negative", lambda b: ["stitch", "sweep", b.model, "--eval", "cloze", "--limit", "-3"], "--limit"),
    ("sweep-ppl-tokens-zero", lambda b: ["stitch", "sweep", b.model, "--eval", "cloze", "--ppl-tokens", "0"],
     "--ppl-tokens"),
    ("metadata-limit-zero", lambda b: ["data", "metadata", "builtin", "--limit", "0", "--out", b.out("m.parquet")],
     "--limit 0"),
    ("metadata-device", lambda b: ["data", "metadata", "builtin", "--device", "tpu", "--out", b.out("m.parquet")],
     "--device"),
    ("make-mc-ctx-huge", lambda b: ["data", "make-mc", "builtin", "--ctx-sentences", "1000000000", "--out",
                                    b.out("m.jsonl")], "--ctx-sentences"),
    ("make-mc-choices-one", lambda b: ["data", "make-mc", "builtin", "--choices", "1", "--out", b.out("m.jsonl")],
     "--choices"),
    ("make-mc-n-zero", lambda b: ["data", "make-mc", "builtin", "--n", "0", "--out", b.out("m.jsonl")], "--n"),
    ("acts-tokens-zero", lambda b: ["activations", b.model, "--out", b.out(), "--tokens", "0"], "--tokens"),
    ("acts-outlier-nan", lambda b: ["activations", b.model, "--out", b.out(), "--outlier-k", "nan"], "--outlier-k"),
    ("acts-save-every-negative", lambda b: ["activations", b.model, "--out", b.out(), "--save-every", "-1"],
     "--save-every"),
    ("acts-batch-huge-memory", lambda b: ["activations", b.model, "--out", b.out(), "--batch-size", "100000",
                                          "--seq-len", "100000"], "memory"),
    ("acts-device", lambda b: ["activations", b.model, "--out", b.out(), "--device", "xpu"], "--device"),
    ("acts-keep-tokens-disk", lambda b: ["activations", b.model, "--out", b.out(), "--keep-tokens", "--tokens",
                                         str(10**15)], "on disk"),
    ("generate-temperature-nan", lambda b: ["generate", b.model, "hi", "-n", "2", "--temperature", "nan"],
     "--temperature nan"),
    ("generate-top-p-inf", lambda b: ["generate", b.model, "hi", "-n", "2", "--top-p", "inf"], "--top-p"),
    ("generate-n-negative", lambda b: ["generate", b.model, "hi", "-n", "-5"], "max_new_tokens"),
    ("generate-device", lambda b: ["generate", b.model, "hi", "--device", "quantum"], "device"),
    # ---- plans: runaway sizes and bad values
    ("plan-huge-repeat", lambda b: ["stitch", "show", "--plan", "0r99999999999999"], "layer calls"),
    ("plan-many-calls", lambda b: ["stitch", "show", "--plan", "allr400", "--layers", "32"], "layer calls"),
    ("plan-depth-huge", lambda b: ["stitch", "show", "--plan", "all", "--layers", "1000000000"], "10,000"),
    ("plan-scale-inf", lambda b: ["stitch", "show", "--plan", "0-3*1e999", "--layers", "8"], "finite"),
    ("plan-mergekit-repeat-huge", lambda b: ["stitch", "show", "--plan", b.file("p.yaml", "slices:\n  - layer_range: [0, 4]\n"
                                                                      "    repeat: 1e12\n"), "--layers", "8"],
     "layer calls"),
    ("plan-mergekit-repeat-nan", lambda b: ["stitch", "show", "--plan", b.file("p.yaml", "slices:\n  - layer_range: [0, 4]\n"
                                                                     "    repeat: .nan\n"), "--layers", "8"], "repeat"),
    ("plan-mergekit-scale-inf", lambda b: ["stitch", "show", "--plan", b.file("p.yaml", "slices:\n  - layer_range: [0, 4]\n"
                                                                    "    attn_scale: .inf\n"), "--layers", "8"], "finite"),
    ("export-huge-repeat", lambda b: ["stitch", "export", b.model, b.out(), "--plan", "0r100000"], "layer calls"),
    ("grow-layers-huge", lambda b: ["grow", b.model, "--out", b.out(), "--layers", "+100000000"], "10,000"),
    ("grow-width-huge", lambda b: ["grow", b.model, "--out", b.out(), "--width", "100000000"], "dim"),
    # ---- chat templates
    ("chat-template-loops", lambda b: ["generate", b.model_with_template(
        "{% for i in range(99999) %}{% for j in range(99999) %}{{ '' }}{% endfor %}{% endfor %}"), "hi", "--chat"],
     "loops too long"),
    ("chat-template-huge-string", lambda b: ["generate", b.model_with_template("{{ 'a' * 10000000000 }}"), "hi",
                                             "--chat"], "exceeds"),
    ("chat-template-syntax", lambda b: ["generate", b.model_with_template("{% if %}"), "hi", "--chat"],
     "chat template"),
    ("chat-template-type-error", lambda b: ["generate", b.model_with_template("{{ messages + 1 }}"), "hi",
                                            "--chat"], "chat template"),
    ("chat-template-sandbox", lambda b: ["generate", b.model_with_template(
        "{{ ''.__class__.__mro__[1].__subclasses__() }}"), "hi", "--chat"], "chat template"),
    # ---- issue 27: runaways and values accepted silently
    ("plan-yaml-bomb-few-aliases", lambda b: ["stitch", "show", "--plan", b.file("p.yaml", BOMB9), "--layers", "4"],
     "expand to more than"),
    ("plan-yaml-alias-of-itself", lambda b: ["stitch", "show", "--plan", b.file("p.yaml", "a: &a [*a]\nplan: *a\n"),
                                             "--layers", "4"], "contains it"),
    ("safetensors-header-deep", lambda b: ["inspect", b.file("deep.safetensors", DEEP_HEADER)], "deeper than"),
    ("plot-stats-fifo", lambda b: ["plot", b.run_with_fifo_stats()], "FIFO"),
    ("model-config-fifo", lambda b: ["generate", b.model_with_fifo_config(), "hi"], "FIFO"),
    ("tokenizer-fifo", lambda b: ["stitch", "export", b.model_with_fifo("tokenizer.json"), b.out(), "--plan", "0-1"],
     "FIFO"),
    ("lens-top-k-huge", lambda b: ["lens", b.model, "hi", "--top-k", "1000000000"], "--top-k"),
    ("stitch-show-empty-plan", lambda b: ["stitch", "show", "--plan", "", "--layers", "4"], "empty plan"),
    ("plan-scale-text", lambda b: ["stitch", "show", "--plan", b.file("p.yaml", "slices:\n  - sources:\n    - "
                                   "layer_range: [0, 2]\n      parameters: {scale: abc}\n"), "--layers", "4"], "scale"),
    ("mc-label-true", _sweep({"ctx": "a", "endings": ["x", "y"], "label": True}), "'label'"),
    ("mc-label-string", _sweep({"ctx": "a", "endings": ["x", "y"], "label": "1"}), "'label'"),
    ("sweep-plan-names-twice", lambda b: ["stitch", "sweep", b.model, "--eval", mc(b, {"ctx": "a", "endings": ["x", "y"],
                                          "label": 0}), "--plan", "a=0-1", "--plan", "a=0-2", "--out", b.out()],
     "already taken"),
    ("train-plan-step-without-data", lambda b: ["train", "--train-plan", b.file("p.json", '{"steps": [{"name": "a"}]}'),
                                                "--run-dir", b.out("r"), "--max-steps", "1"], "'data'"),
    ("train-warmup-past-max", _train("--warmup-steps", "10"), "--warmup-steps"),
    ("train-mini-larger", _train("--mini-batch-size", "16", "--batch-size", "8"), "--mini-batch-size"),
    ("plot-diff-one-run", lambda b: ["plot", b.run_dir('{"train": {}}', b'{"step": 1, "tokens": 1, "loss": 1}\n'),
                                     "--diff"], "--diff"),
    ("plot-saturation-empty", lambda b: ["plot", b.run_dir('{"train": {}}', b""), "--saturation"], "--saturation"),
    ("config-size-as-text", lambda b: ["generate", b.model_with(hidden_size="64"), "hi"], "hidden_size"),
    ("run-root-inside-run", lambda b: ["train", "--exp", "gpt2ish", "--exp", "llamaish", "--run-root",
                                       b.run_dir('{"train": {}}', b"") + "/sub", "--max-steps", "1"], "--run-root"),
]


def _with_template(self: B, template: str) -> str:
    d = Path(self.model_with())
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    return str(d)


B.model_with_template = _with_template  # type: ignore[attr-defined]


def _run_with_fifo_stats(self: B) -> str:
    d = Path(self.run_dir('{"train": {}}'))
    os.mkfifo(d / "stats.jsonl")
    return str(d)


def _model_with_fifo_config(self: B) -> str:
    d = Path(self.model_with())
    (d / "config.json").unlink()
    os.mkfifo(d / "config.json")
    return str(d)


def _model_with_fifo(self: B, name: str) -> str:
    d = Path(self.model_with())
    (d / name).unlink(missing_ok=True)
    os.mkfifo(d / name)
    return str(d)


B.model_with_fifo = _model_with_fifo  # type: ignore[attr-defined]
B.run_with_fifo_stats = _run_with_fifo_stats  # type: ignore[attr-defined]
B.model_with_fifo_config = _model_with_fifo_config  # type: ignore[attr-defined]


@pytest.mark.parametrize(("name", "build", "needle"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(tmp_path, tiny_llama_dir, monkeypatch, name, build, needle):
    monkeypatch.chdir(tmp_path)  # anything written by mistake lands here, where it is noticed
    b = B(tmp_path / "in", tiny_llama_dir)
    b.root.mkdir()
    argv = [b.file("c.txt", b"ok \xff") if a == "DATA" else a for a in build(b)]
    def listing() -> list[str]:  # a run dir's lock file may stay: it is ours, and empty of meaning
        return sorted(str(p.relative_to(b.root)) for p in b.root.rglob("*") if p.name != ".lminspect.lock")

    before = listing()
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 2, (r.output, r.exception)
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("lminspect: error: "), r.output
    assert needle in lines[0], lines[0]
    assert listing() == before, "a refused command wrote something"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_case_count():
    """The closing note quotes this number; keep the table growing, not shrinking."""
    assert len(CASES) >= 100


def test_smoothing_wider_than_the_run_is_exact_and_quick():
    """``plot --smooth 1000000000`` used to loop over every offset of the half-width (a hang);
    only the existing points are visited now, with the same triangular weights."""
    from lminspect.plots import smooth

    vals = [3.0, 1.0, 4.0, 1.0, 5.0]

    def reference(n):
        out = []
        for i in range(len(vals)):
            pairs = [(n + 1 - abs(k), vals[i + k]) for k in range(-n, n + 1) if 0 <= i + k < len(vals)]
            out.append(sum(w * v for w, v in pairs) / sum(w for w, _ in pairs))
        return out

    assert smooth(vals, 7) == pytest.approx(reference(7))
    big = smooth(vals, 10**12)
    assert big == pytest.approx([sum(vals) / len(vals)] * len(vals), rel=1e-6)
