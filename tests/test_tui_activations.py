"""The Activations tab driven with Pilot, on results dirs the real collector writes in the test."""

from __future__ import annotations

import numpy as np
import pytest
from test_tui_helpers import make_acts, opened, palette_pick, press_until, wait_until
from textual.widgets import DataTable, Input, Select, SelectionList, Static

from lminspect.tui.app import LMInspectApp
from lminspect.tui.screens.error import ErrorScreen
from lminspect.tui.widgets.activations import ActsPane, identity_mark, top_dims
from lminspect.tui.widgets.plot import PlotView

pytest.importorskip("torch")

SIZE = (120, 40)
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("private_cache")]



@pytest.fixture(scope="module")
def acts_root(tiny_llama_dir, tmp_path_factory):
    """``base`` (every layer once) and ``plan`` (0-2,2,3: position 3 runs layer 2) of the tiny Llama."""
    root = tmp_path_factory.mktemp("acts")
    make_acts(tiny_llama_dir, root / "base")
    make_acts(tiny_llama_dir, root / "plan", plan="0-2,2,3")
    return root


def _text(widget: Static) -> str:
    return str(widget.render())


def _rows(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def _acts_tab(pilot) -> ActsPane:
    """``a``: the Activations tab, its pane mounted (the first time it is shown)."""
    app = pilot.app
    await press_until(pilot, "a", until=lambda: app.query_one("#tabs").active == "acts" and bool(app.query(ActsPane)),
                      what="the Activations tab")
    return app.query_one(ActsPane)


async def _loaded(pilot, pane: ActsPane, path=None) -> None:
    """The first ticked results dir (``path`` when given) loaded and drawn."""
    def drawn() -> bool:
        res = pane._shown()
        return res is not None and pane.profile is not None and (path is None or res.path == str(path.resolve()))

    await wait_until(pilot, drawn, what="results loaded")


async def test_layers_sites_and_dims_match_the_store(tiny_llama_dir, acts_root, tmp_path):
    from lminspect.activations import load

    st = load(acts_root / "base")
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", acts=[acts_root / "base"], remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        pane = await _acts_tab(pilot)
        await _loaded(pilot, pane)
        sl = app.query_one("#acts-list", SelectionList)
        await wait_until(pilot, lambda: app.focused is sl, what="the list to take focus")
        assert sl.option_count == 1 and sl.selected == [str((acts_root / "base").resolve())]  # ticked by itself
        # the results dir was collected from the open model: marked in the list and the header
        await wait_until(pilot, lambda: "this model" in str(sl.get_option_at_index(0).prompt)
                         and "this model" in _text(app.query_one("#acts-status", Static)), what="identity mark")
        status = _text(app.query_one("#acts-status", Static))
        assert f"model {tiny_llama_dir.name} (llama): this model" in status and "256 tokens (complete)" in status

        # per layer for resid_out (the default kind): median / max over dims of std and |x| max
        assert pane.kind == "resid_out" and app.query_one("#acts-kind", Select).value == "resid_out"
        prof = pane.profile
        assert prof["positions"].tolist() == [0, 1, 2, 3]
        for p in range(4):
            s = st[f"resid_out.{p}"]
            assert prof["std_med"][p] == pytest.approx(np.median(s.std))
            assert prof["std_max"][p] == pytest.approx(s.std.max())
            assert prof["absmax_med"][p] == pytest.approx(np.median(s.absmax))
            assert prof["absmax_max"][p] == pytest.approx(s.absmax.max())
        assert "resid_out: std and |x| max over dims" in app.query_one("#acts-layers", PlotView).text
        rows = _rows(app.query_one("#acts-sites", DataTable))
        assert [r[:2] for r in rows] == [["0", "0"], ["1", "1"], ["2", "2"], ["3", "3"]]  # position, layer
        r2, s2 = rows[2], st["resid_out.2"]
        assert r2[2:6] == [f"{np.median(s2.std):.4g}", f"{s2.std.max():.4g}", f"{np.median(s2.absmax):.4g}",
                           f"{s2.absmax.max():.4g}"]
        assert r2[6] == f"{np.median(s2.kurtosis):.3g}" and r2[8] == str(len(s2.outlier_dims))

        # select a site in the table: its per-dimension view
        assert pane.site == "resid_out.0"
        sites = app.query_one("#acts-sites", DataTable)
        sites.focus()
        await wait_until(pilot, lambda: app.focused is sites, what="the sites table to take focus")
        await pilot.press("down", "down", "enter")
        await wait_until(pilot, lambda: pane.site == "resid_out.2", what="the site to follow the cursor")
        header = _text(app.query_one("#acts-site", Static))
        assert header.startswith(f"resid_out.2   layer 2   dim 64   256 tokens   site std {s2.site_std:.4g}")
        want = [int(d) for d in np.argsort(-s2.std, kind="stable")[:10]]
        assert pane.top == want
        top = _rows(app.query_one("#acts-top", DataTable))
        d0 = want[0]
        assert top[0][:3] == [str(d0), f"{s2.std[d0]:.4g}", f"{s2.absmax[d0]:.4g}"]
        assert top[0][5] == str(int(s2.outlier_counts[d0]))
        assert "resid_out.2: std per dimension" in app.query_one("#acts-dims", PlotView).text

        # |x| max per dimension: the top dims are the massive ones
        app.query_one("#acts-metric", Select).value = "absmax"
        await wait_until(pilot, lambda: pane.metric == "absmax", what="the metric")
        assert pane.top == [int(d) for d in np.argsort(-s2.absmax, kind="stable")[:10]]
        assert _rows(app.query_one("#acts-top", DataTable))[0][2] == f"{s2.absmax.max():.4g}"
        assert "resid_out.2: |x| max per dimension" in app.query_one("#acts-dims", PlotView).text

        # another kind keeps the plan position; mlp_hidden has firing rates
        app.query_one("#acts-kind", Select).value = "mlp_hidden"
        await wait_until(pilot, lambda: pane.site == "mlp_hidden.2", what="the kind switch")
        h2 = st["mlp_hidden.2"]
        assert pane.profile["absmax_max"][2] == pytest.approx(h2.absmax.max())
        top_table = app.query_one("#acts-top", DataTable)
        assert [str(c.label) for c in top_table.columns.values()][-1] == "fire rate"
        d0 = pane.top[0]
        assert d0 == int(np.argmax(h2.absmax))
        assert _rows(top_table)[0][-1] == f"{h2.fire_freq[d0]:.3f}"
        assert f"dead neurons {len(h2.dead)}" in _text(app.query_one("#acts-site", Static))
        # one ticked directory: the diff says how to get one
        assert "tick a second" in _text(app.query_one("#acts-diff-status", Static))
        assert not app.query_one("#acts-diff", DataTable).display


async def test_bad_paths_are_a_line_in_the_tab(tiny_llama_dir, acts_root, tmp_path):
    import shutil

    empty = tmp_path / "empty"
    empty.mkdir()
    # an index.json without the statistics: listed, but it cannot be loaded
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(acts_root / "base" / "index.json", broken / "index.json")
    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", acts=[tmp_path / "missing", broken],
                       remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        await _acts_tab(pilot)
        err = app.query_one("#acts-error", Static)
        await wait_until(pilot, lambda: "no such directory" in _text(err), what="the missing-path line")
        assert "missing" in _text(err) and err.display
        status = app.query_one("#acts-status", Static)
        await wait_until(pilot, lambda: "no stats.npz" in _text(status), what="the load error")
        assert "broken: no stats.npz" in _text(status) and "\n" not in _text(status)
        assert not app.query_one("#acts-body").display
        assert not isinstance(app.screen, ErrorScreen)

        field = app.query_one("#acts-path", Input)
        await press_until(pilot, "w", until=lambda: app.query_one("#tabs").active == "weights", what="the Weights tab",
                          detail=lambda: (app.focused, app.query_one("#tabs").active, field.value))
        await palette_pick(pilot, "add activation")  # the palette's action: the tab, cursor in the field
        await wait_until(pilot, lambda: app.focused is field, what="the path field")
        assert app.query_one("#tabs").active == "acts"
        field.value = str(empty)
        await pilot.press("enter")
        await wait_until(pilot, lambda: "not an activations results dir" in _text(err), what="the empty-dir line")
        assert field.value == str(empty)  # kept for editing
        # a directory with a broken index.json
        (empty / "index.json").write_text("{not json", encoding="utf-8")
        await pilot.press("enter")
        await wait_until(pilot, lambda: "cannot read JSON" in _text(err), what="the bad-index line")

        # a good folder: both results dirs listed, the line cleared
        field.value = str(acts_root)
        await pilot.press("enter")
        pane = app.query_one(ActsPane)
        sl = app.query_one("#acts-list", SelectionList)
        await wait_until(pilot, lambda: len(pane.entries) == 3 and sl.option_count == 3 and not err.display
                         and field.value == "", what="the folder's results dirs")
        assert sl.selected == [str(broken.resolve())]  # "broken" stays ticked
        sl.deselect_all()
        sl.select(str((acts_root / "plan").resolve()))
        await _loaded(pilot, pane, acts_root / "plan")
        assert pane._shown().plan == "0-2,2-3" and "plan 0-2,2-3" in _text(status)  # the canonical plan
        assert not isinstance(app.screen, ErrorScreen) and app.is_running


async def test_two_ticked_runs_show_the_diff(tiny_llama_dir, acts_root, tmp_path):
    from lminspect.activations import diff, load

    app = LMInspectApp(str(tiny_llama_dir), runs_dir=tmp_path / "runs", acts=[acts_root], remember=False)
    async with app.run_test(size=SIZE) as pilot:
        await opened(pilot)
        pane = await _acts_tab(pilot)
        await _loaded(pilot, pane)
        sl = app.query_one("#acts-list", SelectionList)
        await wait_until(pilot, lambda: app.focused is sl, what="the list to take focus")
        assert sl.option_count == 2
        await press_until(pilot, "down", until=lambda: sl.highlighted == 1, what='the cursor on "plan"',
                          detail=lambda: (app.focused, sl.highlighted, sl.selected))
        await press_until(pilot, "space", until=lambda: len(sl.selected) == 2, what='"plan" ticked')
        # A = plan vs B = base (ticked first)
        await wait_until(pilot, lambda: bool(pane.diff_rows), what="the diff")
        want = [r for r in diff(load(acts_root / "plan"), load(acts_root / "base")) if r["kind"] == "resid_out"]
        assert [r["site"] for r in pane.diff_rows] == [r["site"] for r in want]
        for got, exp in zip(pane.diff_rows, want, strict=True):
            for key in ("mean_shift", "rel_shift", "var_ratio", "kurt_change", "kurt_max_change"):
                assert got[key] == pytest.approx(exp[key]), (got["site"], key)
        status = _text(app.query_one("#acts-diff-status", Static))
        assert "A = " in status and "plan vs B = " in status and "base (baseline" in status
        table = app.query_one("#acts-diff", DataTable)
        assert table.display
        rows = _rows(table)
        by = {r[0]: r for r in rows}
        assert by["resid_out.0"][2] == "0"  # same layer 0 on the same tokens
        assert by["resid_out.3"][1] == "2/3" and by["resid_out.3"][2] == f"{want[3]['mean_shift']:.4g}"
        assert "resid_out: A vs B" in app.query_one("#acts-diff-plot", PlotView).text
        # the shown directory is still the first ticked (the baseline)
        assert pane._shown().path == str((acts_root / "base").resolve())

        # the diff follows the kind
        app.query_one("#acts-kind", Select).value = "mlp_out"
        await wait_until(pilot, lambda: pane.diff_rows and pane.diff_rows[0]["kind"] == "mlp_out", what="mlp_out diff")
        # unticking the baseline: one ticked, no diff
        await press_until(pilot, "up", until=lambda: sl.highlighted == 0, what='the cursor on "base"')
        await press_until(pilot, "space", until=lambda: len(sl.selected) == 1, what='"base" unticked')
        await wait_until(pilot, lambda: not pane.diff_rows and pane.profile is not None, what="the diff to go")
        assert pane._shown().path == str((acts_root / "plan").resolve())
        assert pane.profile["positions"].tolist() == [0, 1, 2, 3, 4]  # plan 0-2,2,3: five layer calls
        assert pane.profile["layers"].tolist() == [0, 1, 2, 2, 3]
        assert "plan position" in app.query_one("#acts-layers", PlotView).text


def test_identity_mark_and_top_dims():
    mine = {"fingerprint": "abc", "path": "/m"}
    assert identity_mark({"fingerprint": "abc", "path": "/elsewhere"}, mine) == "this model"
    assert identity_mark({"fingerprint": "zzz", "path": "/m"}, mine) == "this model's path, other files"
    assert identity_mark({"fingerprint": "zzz", "path": "/x"}, mine) == ""
    assert identity_mark({"fingerprint": "abc"}, None) == ""
    assert top_dims(np.array([0.1, -5.0, np.nan, 3.0]), 3) == [1, 3, 0]
