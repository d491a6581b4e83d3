"""The Activations tab: results directories of ``lminspect activations``, per layer and per dimension.

Results directories come from ``lminspect tui --acts DIR`` (a results dir or a folder of them;
repeatable) and from the path field in the tab; a bad path is one line under the field. Scanning
(``backend.find_activations``, which reads index.json files), loading (``backend.load_activations``
then :func:`summarize`: every per-dimension array and per-site aggregate the views need, computed
once), diffs (``backend.activations_diff``, as ``lminspect activations-diff``) and the open
model's identity (``model_identity``) all run in thread workers; results are cached in memory by
directory. The UI thread only picks rows out of those arrays and draws figures.

For the first ticked directory the tab shows, for the chosen kind (resid_out, mlp_hidden, ...):

* per layer (plan position): the median and the max over dimensions of the per-dimension std and
  |x| max, on a log scale: the "massive activations" view, where a layer whose max runs away from
  its median shows which layers blow up;
* a table of the kind's sites, one row per plan position;
* for the highlighted site: the chosen statistic per dimension, and its top dimensions;
* with a second ticked directory, the diff ``activations-diff SECOND FIRST`` (the first ticked
  is the baseline B, as in the Runs tab): the kind's rows and a per-position figure.

Directories whose index names the open model (same ``model_identity`` fingerprint) are marked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.coordinate import Coordinate
from textual.css.query import NoMatches
from textual.widget import Widget
from textual.widgets import DataTable, Input, Label, Select, SelectionList, Static
from textual.widgets.selection_list import Selection
from textual.worker import Worker, WorkerState

from lminspect.tui import backend, plotting
from lminspect.tui.acts_data import (  # noqa: F401 - identity_mark, top_dims: the tab's helpers, tested here
    TOP_DIMS,
    ActsResult,
    SiteView,
    identity_mark,
    layer_profile,
    summarize,
    top_dims,
)
from lminspect.tui.messages import ActsFound, ActsLoaded, ModelIdentity
from lminspect.tui.widgets.plot import PlotView
from lminspect.tui.widgets.ticks import TickList

# the per-dimension statistic shown for a site (label, SiteStats attribute)
METRICS = [("std", "std"), ("|x| max", "absmax"), ("mean", "mean"), ("kurtosis", "kurtosis")]
METRIC_LABELS = {value: label for label, value in METRICS}
MARKED_DIMS = 5  # top dims marked with an x in the per-dimension figure
HINT = ("No activation statistics yet: type a results directory of `lminspect activations` (or a folder "
        "of them) in the field on the left, or start with --acts DIR.")
TICK_HINT = "Tick a results directory on the left (space). Tick a second one to diff it against the first."


def _g(v: float | None, spec: str = ".4g") -> str:
    if v is None:
        return ""
    return format(float(v), spec) if np.isfinite(v) else str(float(v))


def _display_path(path: str | Path) -> str:
    """Relative to the working directory when inside it (short, and stable for snapshots)."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(p)


# ---------------------------------------------------------------------------- the pane


class ActsPane(Widget):
    DEFAULT_CSS = """
    ActsPane { layout: horizontal; height: 1fr; }
    ActsPane #acts-side { width: 36; max-width: 40%; border-right: solid $primary-darken-2; }
    ActsPane #acts-side > Label { padding: 0 1; text-style: bold; margin-top: 1; }
    ActsPane #acts-path { margin: 0 1; width: 1fr; }
    ActsPane #acts-error { height: auto; max-height: 4; color: $error; padding: 0 1; }
    ActsPane #acts-list { height: 1fr; }
    ActsPane #acts-view { width: 1fr; padding: 0 1; }
    ActsPane #acts-status { height: auto; }
    ActsPane #acts-body { height: auto; }
    ActsPane #acts-controls { height: auto; margin: 1 0; }
    ActsPane #acts-controls > Label { padding: 0 1 0 0; }
    ActsPane #acts-controls > Select { width: 1fr; margin-right: 2; }
    ActsPane PlotView { height: 16; margin-bottom: 1; }
    ActsPane PlotView.-message { height: auto; }
    ActsPane DataTable { height: auto; margin-bottom: 1; }  /* the view scrolls, not each table */
    ActsPane #acts-site, ActsPane #acts-diff-status { height: auto; text-style: bold; }
    """

    def __init__(self, paths: Sequence[str | Path] = (), *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.paths = [str(p) for p in paths]
        self.entries: dict[str, dict[str, Any]] = {}  # resolved dir -> its index.json, in list order
        self.cache: dict[str, ActsResult] = {}
        self.load_errors: dict[str, str] = {}
        self.diffs: dict[tuple[str, str], list[dict[str, Any]] | str] = {}  # (a, b) -> rows or an error
        self.identity: dict[str, Any] | None = None
        self.store: Any = None  # the open model, whose identity marks its own results
        self.kind: str | None = None
        self.metric = "std"
        self.site: str | None = None
        # what is on screen (read by tests): the per-layer series, the top dims, the diff rows
        self.profile: dict[str, np.ndarray] | None = None
        self.top: list[int] = []
        self.diff_rows: list[dict[str, Any]] = []
        self._kind_options: list[str] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="acts-side"):
            yield Label("results (tick 1, or 2: diff)")
            yield Input(placeholder="add a results dir (Enter)", id="acts-path", compact=True)
            yield Static("", id="acts-error", markup=False)
            yield TickList(id="acts-list")
        with VerticalScroll(id="acts-view"):
            yield Static(HINT, id="acts-status", markup=False)
            with Vertical(id="acts-body"):
                with Horizontal(id="acts-controls"):
                    yield Label("kind")
                    yield Select[str]([], prompt="kind", id="acts-kind", compact=True)
                    yield Label("per dim")
                    yield Select[str](METRICS, value="std", allow_blank=False, id="acts-metric", compact=True)
                yield PlotView("", id="acts-layers")
                sites: DataTable = DataTable(id="acts-sites", cursor_type="row", zebra_stripes=True)
                # one row per plan position of the chosen kind (row key: the site name)
                sites.add_columns("pos", "layer", "std med", "std max", "|x| med", "|x| max", "kurt med", "kurt max",
                                  "outl")
                yield sites
                yield Static("", id="acts-site", markup=False)
                yield PlotView("", id="acts-dims")
                yield DataTable(id="acts-top", cursor_type="row", zebra_stripes=True)
                yield Static("", id="acts-diff-status", markup=False)
                diff: DataTable = DataTable(id="acts-diff", cursor_type="row", zebra_stripes=True)
                diff.add_columns("site", "layer a/b", "|Δmean|", "rel", "var a/b", "kurt a", "kurt b", "Δkurt",
                                 "Δkurt max")
                yield diff
                yield PlotView("", id="acts-diff-plot")

    def on_mount(self) -> None:
        # the app mounts this pane when its tab is first shown, maybe after the model opened
        if getattr(self.app, "store", None) is not None:
            self.set_store(self.app.store)
        self.query_one("#acts-error", Static).display = False
        self.query_one("#acts-body").display = False
        if self.paths:
            self.query_one("#acts-status", Static).update("reading " + ", ".join(self.paths) + " ...")
            self._scan(self.paths, False)

    def focus_target(self) -> Widget:
        """The list when it has (or will have: ``--acts``) entries, else the path field
        (the pane itself in the moment its widgets are still being mounted)."""
        try:
            sl = self.query_one("#acts-list", SelectionList)
            return sl if sl.option_count or self.paths else self.query_one("#acts-path", Input)
        except NoMatches:
            return self

    # -- the open model ----------------------------------------------------------------

    def set_store(self, store: Any) -> None:
        # The identity is computed only once there are results to mark: it imports the
        # activations package (and torch), which would slow the first paint of the tree.
        self.identity = None
        self.store = store
        if self.entries:
            self._identity(store)

    @work(thread=True, exclusive=True, exit_on_error=False, group="acts-identity")
    def _identity(self, store: Any) -> None:
        try:
            ident: dict[str, Any] | None = backend.model_identity(store)
        except Exception:  # noqa: BLE001 - no identity: nothing is marked, nothing else breaks
            ident = None
        self.post_message(ModelIdentity(ident))

    def on_model_identity(self, message: ModelIdentity) -> None:
        message.stop()
        self.identity = message.identity
        sl = self.query_one("#acts-list", SelectionList)
        for i, path in enumerate(self.entries):
            sl.replace_option_prompt_at_index(i, self._label(path))
        self._draw()

    # -- finding results directories -------------------------------------------------------

    def add_path(self, path: str) -> None:
        """Look for results directories at ``path`` (in a worker); the answer lands in the list."""
        self._scan([path], True)

    @on(Input.Submitted, "#acts-path")
    def _path_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        value = event.value.strip()
        if value:
            self.add_path(value)

    @work(thread=True, exit_on_error=False, group="acts-scan")
    def _scan(self, paths: list[str], typed: bool) -> None:
        entries: list[tuple[str, dict[str, Any]]] = []
        errors: list[str] = []
        for p in paths:
            try:
                found, problems = backend.find_activations(p)
            except Exception as exc:  # noqa: BLE001 - a bad path is a line in the tab, not a crash
                errors.append(backend.user_message(exc))
                continue
            entries += [(str(d.resolve()), idx) for d, idx in found]
            errors += problems
        self.post_message(ActsFound(entries, errors, typed))

    def on_acts_found(self, message: ActsFound) -> None:
        message.stop()
        err = self.query_one("#acts-error", Static)
        err.update("; ".join(message.errors))
        err.display = bool(message.errors)
        sl = self.query_one("#acts-list", SelectionList)
        new = []
        for path, index in message.entries:
            known = path in self.entries
            self.entries[path] = index
            if known:
                continue
            new.append(path)
            sl.add_option(Selection(self._label(path), path))
        if new:  # a new name may clash with an older one: relabel all
            for i, path in enumerate(self.entries):
                sl.replace_option_prompt_at_index(i, self._label(path))
            if self.identity is None and self.store is not None:
                self._identity(self.store)
        if message.typed and message.entries and not message.errors:
            self.query_one("#acts-path", Input).value = ""
        if sl.option_count and sl.highlighted is None:
            sl.highlighted = 0  # so space ticks straight away
        if message.entries and not sl.selected:
            sl.select(new[0] if new else message.entries[0][0])  # -> SelectedChanged -> load
        elif not self.entries:
            self._draw()

    def _label(self, path: str) -> Content:
        name = Path(path).name
        if sum(Path(p).name == name for p in self.entries) > 1:
            name = _display_path(path)
        mark = identity_mark(self.entries.get(path, {}).get("model"), self.identity)
        return Content.assemble(name, ("  " + mark, "bold")) if mark else Content(name)

    # -- ticking and loading ----------------------------------------------------------------

    def ticked(self) -> list[str]:
        return list(self.query_one("#acts-list", SelectionList).selected)

    @on(SelectionList.SelectedChanged, "#acts-list")
    def _ticks_changed(self, event: SelectionList.SelectedChanged) -> None:
        event.stop()
        self._sync()

    @staticmethod
    def _pair(ticked: list[str]) -> tuple[str, str] | None:
        """(A, B) of the diff: the second ticked against the first (the baseline)."""
        return (ticked[1], ticked[0]) if len(ticked) >= 2 else None

    def _sync(self) -> None:
        """Load what the ticks need (in a worker), and draw what is there."""
        ticked = self.ticked()[:2]
        missing = [p for p in ticked if p not in self.cache and p not in self.load_errors]
        pair = self._pair(ticked)
        need_diff = (pair is not None and pair not in self.diffs
                     and not any(p in self.load_errors for p in pair))
        if missing or need_diff:
            self._load(ticked)
        self._draw()

    @work(thread=True, exclusive=True, exit_on_error=False, group="acts-load")
    def _load(self, paths: list[str]) -> None:
        results: dict[str, ActsResult] = {}
        errors: dict[str, str] = {}
        diffs: dict[tuple[str, str], Any] = {}
        for p in paths:
            if p in self.cache:
                continue
            try:
                results[p] = summarize(backend.load_activations(p), p)
            except Exception as exc:  # noqa: BLE001 - one bad directory must not hide the other
                errors[p] = backend.user_message(exc)
        pair = self._pair(paths)
        if pair is not None and not errors and pair not in self.diffs:
            a, b = (results.get(p) or self.cache[p] for p in pair)
            try:
                diffs[pair] = backend.activations_diff(a.stats, b.stats)
            except Exception as exc:  # noqa: BLE001 - e.g. no site in common
                diffs[pair] = backend.user_message(exc)
        self.post_message(ActsLoaded(results, errors, diffs))

    def on_acts_loaded(self, message: ActsLoaded) -> None:
        message.stop()
        self.cache.update(message.results)
        self.load_errors.update(message.errors)
        self.diffs.update(message.diffs)
        self._sync()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR or not (event.worker.group or "").startswith("acts-"):
            return
        self.app.report_error("Could not read activation statistics", event.worker.error)

    # -- drawing ---------------------------------------------------------------------------

    def _draw(self) -> None:
        status = self.query_one("#acts-status", Static)
        body = self.query_one("#acts-body")
        ticked = self.ticked()
        if not self.entries:
            status.update(HINT)
            body.display = False
            return
        if not ticked:
            status.update(TICK_HINT)
            body.display = False
            return
        shown = ticked[0]
        if shown in self.load_errors:
            msg = self.load_errors[shown]  # library messages name the directory; others get it here
            status.update(msg if shown in msg else f"{_display_path(shown)}: {msg}")
            body.display = False
            return
        res = self.cache.get(shown)
        if res is None:
            status.update(f"loading {_display_path(shown)} ...")
            return
        status.update(self._header(res))
        body.display = True
        self._set_kinds(res)
        self._draw_kind(res)
        self._draw_diff(ticked)

    def _header(self, res: ActsResult) -> str:
        m = res.model
        who = f"model {m.get('name') or '?'} ({m.get('arch') or '?'})"
        mark = identity_mark(m, self.identity)
        if mark:
            who += f": {mark}"
        elif self.identity is not None:
            who += ": not the open model"
        state = "complete" if res.complete else "partial"
        settings = res.index.get("settings") or {}
        data = f", data {settings['data']}" if settings.get("data") else ""
        return (f"{_display_path(res.path)}   {who}\n"
                f"plan {res.plan}   {res.tokens:,} tokens ({state}){data}   {len(res.sites)} sites")

    def _set_kinds(self, res: ActsResult) -> None:
        kinds = res.kinds
        if self.kind not in kinds:
            self.kind = "resid_out" if "resid_out" in kinds else (kinds[0] if kinds else None)
        select = self.query_one("#acts-kind", Select)
        if kinds != self._kind_options:
            self._kind_options = kinds
            select.set_options([(k, k) for k in kinds])
        if self.kind is not None and select.value != self.kind:
            select.value = self.kind

    @on(Select.Changed, "#acts-kind")
    def _kind_changed(self, event: Select.Changed) -> None:
        event.stop()
        value = event.select.value  # the current value: a stale message changes nothing
        if value is Select.NULL or value == self.kind:
            return
        self.kind = str(value)
        self._draw()

    @on(Select.Changed, "#acts-metric")
    def _metric_changed(self, event: Select.Changed) -> None:
        event.stop()
        value = event.select.value
        if value is Select.NULL or value == self.metric:
            return
        self.metric = str(value)
        self._draw_site()

    def _shown(self) -> ActsResult | None:
        ticked = self.ticked()
        return self.cache.get(ticked[0]) if ticked else None

    def _draw_kind(self, res: ActsResult) -> None:
        sites = res.of_kind(self.kind) if self.kind else []
        plot = self.query_one("#acts-layers", PlotView)
        table = self.query_one("#acts-sites", DataTable)
        table.clear()
        if not sites:
            self.profile = None
            plot.show_message("no sites of this kind")
            return
        prof = layer_profile(sites)
        self.profile = prof
        kind = self.kind
        xlabel = "layer" if res.plan_is_identity else "plan position"
        series = [("std median", prof["std_med"]), ("std max", prof["std_max"]),
                  ("|x| max median", prof["absmax_med"]), ("|x| max max", prof["absmax_max"])]
        positions = prof["positions"].tolist()
        plot.show_figure(lambda w, h: plotting.series_figure(
            positions, series, w, h, f"{kind}: std and |x| max over dims" if w >= 72 else f"{kind}: std, |x| max",
            xlabel=xlabel, log=True), save=_series_saver(positions, series, f"{kind}: std and |x| max over dims",
                                                         xlabel), name=f"{kind}_profile")
        for s in sites:
            a = s.agg
            table.add_row(str(s.pos), "" if s.layer is None else str(s.layer), _g(a["std_med"]), _g(a["std_max"]),
                          _g(a["absmax_med"]), _g(a["absmax_max"]), _g(a["kurt_med"], ".3g"), _g(a["kurt_max"], ".3g"),
                          str(s.outlier_dims), key=s.name)
        # keep the plan position when switching kinds or directories
        pos = int(self.site.rpartition(".")[2]) if self.site else 0
        names = [s.name for s in sites]
        from lminspect.models.sites import site_name

        want = site_name(kind, pos)
        self.site = want if want in names else names[0]
        table.move_cursor(row=names.index(self.site), animate=False)
        self._draw_site()

    @on(DataTable.RowHighlighted, "#acts-sites")
    def _site_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._follow_cursor()

    @on(DataTable.RowSelected, "#acts-sites")
    def _site_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self._follow_cursor()
        self.query_one("#acts-site", Static).scroll_visible(animate=False, top=True)

    def _follow_cursor(self) -> None:
        table = self.query_one("#acts-sites", DataTable)
        res = self._shown()
        if res is None or not table.row_count:
            return
        key = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value
        if key in res.sites and key != self.site:
            self.site = key
            self._draw_site()

    def select_site(self, name: str) -> None:
        """Highlight ``name`` in the sites table (switching kind if needed); draws its view."""
        res = self._shown()
        if res is None or name not in res.sites:
            return
        self.site = name
        kind = res.sites[name].kind
        if kind != self.kind:
            self.kind = kind
            self._draw()
        else:
            table = self.query_one("#acts-sites", DataTable)
            table.move_cursor(row=table.get_row_index(name), animate=False)
            self._draw_site()

    def _draw_site(self) -> None:
        res = self._shown()
        header = self.query_one("#acts-site", Static)
        plot = self.query_one("#acts-dims", PlotView)
        table = self.query_one("#acts-top", DataTable)
        if res is None or self.site not in res.sites:
            header.update("")
            plot.show_message("")
            table.clear(columns=True)
            self.top = []
            return
        s = res.sites[self.site]
        metric = self.metric
        label = METRIC_LABELS.get(metric, metric)
        values = s.per_dim[metric]
        top = top_dims(values)
        self.top = top
        extra = ""
        if s.dead is not None:
            extra = f"   dead neurons {s.dead}, fire rate {_g(s.fire_mean, '.3f')}"
        header.update(f"{s.name}   layer {s.layer}   dim {s.dim}   {s.n:,} tokens   site std {_g(s.site_std)}\n"
                      f"outlier dims {s.outlier_dims} (|x| > {s.outlier_k:g} x site std){extra}\n"
                      f"top {len(top)} dims by {label if metric in ('std', 'absmax') else f'|{label}|'}:")
        mark = top[:MARKED_DIMS]
        plot.show_figure(lambda w, h: plotting.dims_figure(values, w, h, f"{s.name}: {label} per dimension", mark=mark))
        table.clear(columns=True)
        cols = ["dim", "std", "|x| max", "mean", "kurtosis", "outliers"]
        fire = s.per_dim.get("fire")
        if fire is not None:
            cols.append("fire rate")
        table.add_columns(*cols)
        d = s.per_dim
        for dim in top:
            row = [str(dim), _g(d["std"][dim]), _g(d["absmax"][dim]), _g(d["mean"][dim]), _g(d["kurtosis"][dim], ".3g"),
                   str(int(d["outliers"][dim]))]
            if fire is not None:
                row.append(_g(fire[dim], ".3f"))
            table.add_row(*row, key=str(dim))

    def _draw_diff(self, ticked: list[str]) -> None:
        status = self.query_one("#acts-diff-status", Static)
        table = self.query_one("#acts-diff", DataTable)
        plot = self.query_one("#acts-diff-plot", PlotView)
        table.clear()
        self.diff_rows = []
        pair = self._pair(ticked)
        table.display = plot.display = False
        if pair is None:
            status.update("diff: tick a second results directory (the first ticked is the baseline B)")
            return
        a, b = pair
        names = f"A = {_display_path(a)} vs B = {_display_path(b)} (baseline, ticked first)"
        bad = [p for p in pair if p in self.load_errors]
        rows = self.diffs.get(pair)
        if bad:
            status.update(f"diff {names}: {_display_path(bad[0])} cannot be read")
            return
        if rows is None:
            status.update(f"diff {names}: computing ...")
            return
        if isinstance(rows, str):
            status.update(f"diff {names}: {rows}")
            return
        kind = self.kind
        mine = [r for r in rows if r["kind"] == kind]
        more = "; more than two ticked: the first two are compared" if len(self.ticked()) > 2 else ""
        if not mine:
            status.update(f"diff {names}: no {kind} site in common{more}")
            return
        self.diff_rows = mine
        status.update(f"diff {names}: {kind}, {len(mine)} positions in common{more}")
        for r in mine:
            table.add_row(r["site"], f"{r['layer_a']}/{r['layer_b']}", f"{r['mean_shift']:.4g}", f"{r['rel_shift']:.3g}",
                          f"{r['var_ratio']:.3g}", f"{r['kurt_a']:.3g}", f"{r['kurt_b']:.3g}",
                          f"{r['kurt_change']:+.3g}", f"{r['kurt_max_change']:+.3g}", key=r["site"])
        table.display = plot.display = True
        positions = [r["pos"] for r in mine]
        series = [("rel |Δmean|", [r["rel_shift"] for r in mine]), ("var a/b", [r["var_ratio"] for r in mine])]
        plot.show_figure(lambda w, h: plotting.series_figure(positions, series, w, h, f"{kind}: A vs B",
                                                             xlabel="plan position"))


def _series_saver(x: list[Any], series: list[tuple[str, Any]], title: str, xlabel: str) -> Any:
    """Save a per-layer profile as PNG/SVG (ctrl+s) with lminspect.figures, y on a log scale as shown."""

    def save(path: Any) -> Any:
        from lminspect.figures import save_lines

        data = {label: (list(x), [float(v) for v in values]) for label, values in series}
        return save_lines(path, data, title=title, xlabel=xlabel, ylog=True)

    return save
