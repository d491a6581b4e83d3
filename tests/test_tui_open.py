"""Opening things in the TUI (issue 29, section 4): a run from the picker opens its weights (or says
why it cannot), runs one level down in the runs folder, the title names a fetched model, and the
palette's tensor hits use the canonical names and reveal the tensor in the tree."""

from __future__ import annotations

import shutil

import pytest
from test_tui_helpers import opened, palette_pick, press_until, wait_until, write_run
from textual.widgets import OptionList, SelectionList, Tree

from lminspect.tui.app import LMInspectApp
from lminspect.tui.screens.error import ErrorScreen
from lminspect.tui.screens.picker import PickerScreen

SIZE = (120, 40)
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("private_cache")]


def _train(run_dir) -> None:
    from lminspect.train import TrainConfig, train

    train(TrainConfig(exp="gpt2ish", run_dir=str(run_dir), batch_size=2, seq_len=16, max_steps=2, eval_every=0,
                      save_every=1, keep_checkpoints=0, model_args={"n_layer": 1, "dim": 16, "n_head": 2},
                      optimizer="adamw", lr=3e-3, progress=False))


async def _pick(pilot, value: str) -> None:
    """In the open picker, choose the entry whose id ends with ``value``."""
    app = pilot.app
    await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen) and bool(app.screen.query("#picker-list")),
                     what="the picker")
    options = app.screen.query_one("#picker-list", OptionList)
    index = next(i for i in range(options.option_count) if (options.get_option_at_index(i).id or "").endswith(value))
    options.focus()
    options.highlighted = index
    await wait_until(pilot, lambda: app.focused is options and options.highlighted == index, what="the entry")
    await press_until(pilot, "enter", until=lambda: not isinstance(app.screen, PickerScreen), what="the pick")


async def test_picker_opens_a_runs_weights_and_lists_nested_runs(tmp_path):
    runs = tmp_path / "runs"
    _train(runs / "cmp" / "tl")  # a --run-root batch: runs/cmp/tl, with checkpoints
    write_run(runs / "plain", steps=10)  # curves only
    app = LMInspectApp(None, runs_dir=runs, remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await _pick(pilot, "cmp/tl")
        await wait_until(pilot, lambda: app.store is not None, what="the run's weights to open")
        assert app.sub_title.startswith("tl@step_0000002 (gpt2") and app.query_one("#tabs").active == "weights"
        sl = app.query_one("#runs-list", SelectionList)
        assert str(runs / "cmp" / "tl") in sl.selected  # and its curves ticked in the Runs tab
        labels = [str(sl.get_option_at_index(i).prompt) for i in range(sl.option_count)]
        assert any(lb.startswith("cmp/tl · gpt2ish · 2 ·") for lb in labels), labels
        assert any(lb.startswith("plain · gpt2ish · 10 ·") for lb in labels), labels

        # a run without checkpoints: said on screen, not a silent "no model"
        await press_until(pilot, "o", until=lambda: isinstance(app.screen, PickerScreen), what="the picker")
        await _pick(pilot, "plain")
        await wait_until(pilot, lambda: isinstance(app.screen, ErrorScreen), what="the error")
        assert "no checkpoints" in str(app.screen.query_one("#error-body").render())
        assert str(runs / "plain") in sl.selected


async def test_title_names_a_fetched_model_not_its_folder(tiny_llama_dir, tmp_path):
    # how recent.json keeps a fetched model: the path of its converted folder, cache/models/NAME/hf
    hf = tmp_path / "cache" / "models" / "tiny" / "hf"
    shutil.copytree(tiny_llama_dir, hf)
    app = LMInspectApp(str(hf), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        assert app.sub_title.startswith("tiny (llama"), app.sub_title
        assert str(app.query_one("#weights-tree", Tree).root.label).startswith("tiny [llama]")


async def test_palette_tensor_hit_is_canonical_and_revealed_in_the_tree(tiny_llama_dir, tmp_path):
    from textual.widgets import Static

    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        tree = app.query_one("#weights-tree", Tree)
        # stored as model.layers.3.mlp.up_proj.weight; the tree and the palette say the canonical name
        await palette_pick(pilot, "layers.3.mlp.up", expect="tensor layers.3.mlp.up.weight")
        await wait_until(pilot, lambda: tree.cursor_node is not None and tree.cursor_node.data == "layers.3.mlp.up.weight",
                         what="the tree's cursor on the tensor", detail=lambda: tree.cursor_node)
        assert "layers.3.mlp.up.weight" in str(app.query_one("#tensor-header", Static).render())
        parent = tree.cursor_node.parent
        while parent is not None:  # every group above it open
            assert parent.is_expanded, parent
            parent = parent.parent
        assert tree.scroll_offset.y <= tree.cursor_line < tree.scroll_offset.y + tree.scrollable_content_region.height


def test_picker_lists_a_fetched_model_once(tiny_llama_dir, tmp_path):
    """Opened by its path once, a fetched model's folder is not listed again beside its name."""
    import json

    from lminspect.tui import backend

    hf = tmp_path / "cache" / "models" / "tiny" / "hf"
    shutil.copytree(tiny_llama_dir, hf)
    other = tmp_path / "elsewhere"
    shutil.copytree(tiny_llama_dir, other)
    (tmp_path / "cache" / "recent.json").write_text(json.dumps([str(hf), str(other)]))
    assert [k.ref for k in backend.known_models()] == ["tiny", str(other)]
