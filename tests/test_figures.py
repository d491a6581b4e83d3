"""Figures to keep (lminspect.figures): PNG/SVG written atomically and readable by an image reader,
one-line errors without matplotlib or with a bad suffix; the CLI's --save on stats and attention,
and the attention heatmap without colour."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from lminspect import figures
from lminspect.cli import app
from lminspect.errors import UserError

runner = CliRunner()
SERIES = {"base": ([0, 1, 2, 3], [4.0, 3.0, 2.5, 2.2]), "variant": ([0, 1, 2, 3], [4.1, 3.2, None, 2.0])}


def _png(path):
    Image = pytest.importorskip("PIL.Image")
    with Image.open(path) as im:
        im.load()
        return im.format, im.size


def test_save_lines_png_and_svg(tmp_path):
    pytest.importorskip("matplotlib")
    png = figures.save_lines(tmp_path / "f.png", SERIES, title="train loss", xlabel="tokens")
    fmt, (w, h) = _png(png)
    assert fmt == "PNG" and w > 300 and h > 200
    svg = figures.save_lines(tmp_path / "f.svg", SERIES, title="train loss", xlabel="tokens")
    text = svg.read_text()
    assert "<svg" in text and "train loss" in text and "variant" in text
    with pytest.raises(UserError, match="exists"):
        figures.save_lines(png, SERIES)
    figures.save_lines(png, SERIES, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png", "f.svg"]  # no temp files left


def test_bad_suffix_and_missing_matplotlib(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"\.png or \.svg"):
        figures.check_figure_path(tmp_path / "f.jpg")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(UserError, match=r"lminspect\[figures\]"):
        figures.check_figure_path(tmp_path / "f.png")
    assert not (tmp_path / "f.png").exists()


def test_attention_piped_ramp_and_save(tiny_llama_dir, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "attn.png"
    r = runner.invoke(app, ["attention", str(tiny_llama_dir), "hello world", "--layer", "1",
                            "--no-fft", "--save", str(png)])
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "█" not in out and "scale:" in out and "key position" in out
    rows = [ln for ln in out.splitlines() if ln[:3].strip().isdigit()]
    assert rows and any(c in rows[0] for c in "@%#")  # the first query attends only to itself: the top of the ramp
    assert _png(png)[0] == "PNG"


def test_stats_by_layer_save(tiny_llama_dir, tmp_path):
    pytest.importorskip("matplotlib")
    svg = tmp_path / "std.svg"
    r = runner.invoke(app, ["stats", str(tiny_llama_dir), "--by-layer", "std", "--no-svd", "--save", str(svg)])
    assert r.exit_code == 0, r.output
    assert "<svg" in svg.read_text() and "std by layer" in svg.read_text()
    r = runner.invoke(app, ["stats", str(tiny_llama_dir), "--no-svd", "--save", str(tmp_path / "x.png")])
    assert r.exit_code == 2 and "--by-layer" in r.stderr and not (tmp_path / "x.png").exists()


def test_inspect_numeric_layer_order_and_full_names(tiny_llama_dir):
    r = runner.invoke(app, ["inspect", str(tiny_llama_dir)])
    assert r.exit_code == 0, r.output
    assert "…" not in r.stdout
    layers = [int(w.split(".")[1]) for w in r.stdout.split() if w.startswith("layers.") and w.split(".")[1].isdigit()]
    assert layers == sorted(layers) and len(set(layers)) > 1


def test_natural_key_orders_layers_by_number():
    from lminspect.weights.naming import natural_key

    names = ["layers.10.mlp", "layers.2.attn", "embed", "layers.1.mlp", "layers.2.mlp"]
    assert sorted(names, key=natural_key) == ["embed", "layers.1.mlp", "layers.2.attn", "layers.2.mlp",
                                              "layers.10.mlp"]
