"""``lminspect grow``: writes a loadable grown directory; bad input is one line, exit 2."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lminspect.cli import app

torch = pytest.importorskip("torch")


def test_grow_cli_checkpoint(tmp_path):
    from lminspect.models import load_model
    from lminspect.train import TrainConfig, train

    res = train(TrainConfig(exp="llamaish", run_dir=str(tmp_path / "run"), batch_size=2, seq_len=16,
                            max_steps=2, eval_every=0, save_every=0, progress=False,
                            model_args={"n_layer": 1, "dim": 32, "n_head": 4}))
    out = tmp_path / "grown"
    r = CliRunner().invoke(app, ["grow", str(tmp_path / "run"), "--layers", "+1", "--width", "64",
                                 "--ffn", "192", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "layers 1->2" in r.output and "width 32->64" in r.output
    old, new = load_model(str(res.checkpoint)), load_model(str(out))
    ids = torch.randint(0, 4096, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert (old(ids) - new(ids)).abs().max().item() < 1e-5
    assert (out / "tokenizer.json").is_file()


@pytest.mark.parametrize("args,match", [
    (["--width", "32"], "shrink width"),
    (["--heads", "3"], "heads"),
    ([], "nothing to grow"),
    (["--layers", "x"], "--layers"),
])
def test_grow_cli_bad_input(tmp_path, tiny_gpt2_dir, args, match):
    r = CliRunner().invoke(app, ["grow", str(tiny_gpt2_dir), *args, "--out", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    err = r.stderr if hasattr(r, "stderr") else r.output
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and "lminspect: error:" in lines[0] and match in lines[0]
    assert not (tmp_path / "o").exists()


def test_grow_cli_unknown_arch(tmp_path, tiny_falcon_dir):
    r = CliRunner().invoke(app, ["grow", str(tiny_falcon_dir), "--layers", "+1", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "falcon" in (r.stderr if hasattr(r, "stderr") else r.output)
