"""The TUI's comparisons with Pilot: a second model's per-tensor diff beside the Weights tab's
statistics (``c``), and a run's timeline across checkpoints (``t`` in the Runs tab)."""

from __future__ import annotations

import pytest
from test_tui_helpers import opened, press_until, wait_until
from textual.widgets import DataTable, Input, Select, SelectionList

from lminspect.tui.app import LMInspectApp
from lminspect.tui.screens.picker import PickerScreen
from lminspect.tui.screens.timeline import TimelineScreen
from lminspect.tui.widgets.compare import DiffPanel
from lminspect.tui.widgets.plot import PlotView
from lminspect.tui.widgets.weights import WeightsPane

SIZE = (120, 40)
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("private_cache")]


async def test_weights_tab_shows_diff_to_a_second_model(tiny_llama_dir, scaled_copy, tmp_path):
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        panel = app.query_one(DiffPanel)
        assert not panel.display  # nothing to compare with yet
        await press_until(pilot, "c", until=lambda: isinstance(app.screen, PickerScreen)
                          and bool(app.screen.query("#picker-input")), what="the picker")
        field = app.screen.query_one("#picker-input", Input)
        field.focus()  # Enter in the list would pick its highlighted entry instead
        await wait_until(pilot, lambda: app.focused is field, what="the path field to take focus")
        field.value = str(scaled_copy)
        await pilot.press("enter")
        await wait_until(pilot, lambda: panel.other is not None, what="the second model")
        assert panel.display
        pane = app.query_one(WeightsPane)
        pane.show_tensor("layers.2.attn.q.weight")
        await wait_until(pilot, lambda: "rel_change 1 " in panel.text, what="the scaled layer's diff")
        assert "cosine 1.000000" in panel.text and "top-8 overlap 1.000" in panel.text
        assert "d std" in panel.text  # beside the single-model statistics, which still arrive
        await wait_until(pilot, lambda: "layers.2.attn.q.weight" in pane.cache, what="statistics")
        assert app.query_one("#stats-table", DataTable).row_count > 5
        pane.show_tensor("layers.0.mlp.up.weight")
        await wait_until(pilot, lambda: "rel_change 0 " in panel.text, what="an unchanged layer's diff")


async def test_timeline_screen_for_a_ticked_run(tmp_path):
    from lminspect.train import TrainConfig, train

    runs = tmp_path / "runs"
    train(TrainConfig(exp="gpt2ish", run_dir=str(runs / "tl"), batch_size=2, seq_len=16, max_steps=4, eval_every=0,
                      save_every=1, keep_checkpoints=0, model_args={"n_layer": 1, "dim": 16, "n_head": 2},
                      optimizer="adamw", lr=3e-3, progress=False))
    app = LMInspectApp(None, runs_dir=runs, remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, PickerScreen), what="the picker")
        await press_until(pilot, "escape", until=lambda: not isinstance(app.screen, PickerScreen),
                          what="the picker to close")
        sl = app.query_one("#runs-list", SelectionList)
        await press_until(pilot, "r", until=lambda: app.focused is sl, what="the Runs tab's list")
        await press_until(pilot, "space", until=lambda: list(sl.selected), what="a tick")
        await pilot.press("t")
        await wait_until(pilot, lambda: isinstance(app.screen, TimelineScreen), what="the timeline")
        screen = app.screen
        await wait_until(pilot, lambda: screen.data is not None, what="the std timeline")
        table = screen.query_one("#timeline-table", DataTable)
        assert table.row_count == 4 and screen.data.steps == [1, 2, 3, 4]
        assert "std across checkpoints" in screen.query_one("#timeline-plot", PlotView).text
        emb = screen.query_one("#timeline-embeddings", PlotView)
        await wait_until(pilot, lambda: "PCA" in emb.text, what="the embeddings plane")
        assert "steps 1-4" in emb.text
        screen.query_one("#timeline-stat", Select).value = "stable_rank"
        await wait_until(pilot, lambda: screen.data.stat == "stable_rank", what="the stable-rank timeline")
        assert "mlp.up" in screen.data.cols and all(v is not None for v in screen.data.cols["mlp.up"])
        await press_until(pilot, "escape", until=lambda: not isinstance(app.screen, TimelineScreen),
                          what="the timeline to close")
