"""The Weights tab's comparison line: the selected tensor against a second model.

``c`` (or the palette's "Compare with a second model") picks a model, checkpoint or run (its
newest checkpoint); from then on every selected tensor shows, beside its own statistics,
its difference to the same tensor of the second model (``lminspect diff``'s numbers, computed
in a worker and cached on disk like the statistics).
"""

from __future__ import annotations

from typing import Any

from textual import work
from textual.message import Message
from textual.widgets import Static
from textual.worker import Worker, WorkerState, get_current_worker

from lminspect.tui import backend


class DiffComputed(Message):
    """A worker finished one tensor's diff (``job`` tells a stale result from the current one)."""

    def __init__(self, name: str, row: dict[str, Any] | None, note: str, job: int) -> None:
        super().__init__()
        self.name, self.row, self.note, self.job = name, row, note, job


def diff_lines(label: str, row: dict[str, Any]) -> str:
    """The panel's text for one diff row (``compare.diff.diff_pair``'s dict)."""

    def f(key: str, spec: str = "{:.4g}") -> str:
        v = row.get(key)
        return "-" if v is None else spec.format(v)

    first = (f"vs {label}: rel_change {f('rel_change')}   cosine {f('cosine', '{:.6f}')}   "
             f"max|diff| {f('max_abs_diff')}")
    second = []
    if row.get("subspace_overlap") is not None:
        second.append(f"top-{row.get('k', 8)} overlap {f('subspace_overlap', '{:.3f}')}   top cos {f('top_cos', '{:.3f}')}")
    deltas = "   ".join(f"d {s} {f('d_' + s, '{:+.3g}')}" for s in ("std", "kurtosis", "stable_rank", "alpha")
                       if row.get("d_" + s) is not None)
    if deltas:
        second.append(deltas)
    match = "" if row.get("match") in (None, "same") else f"\n{row['match']} (the overlapping block is compared)"
    return "\n".join([first, *second]) + match


class DiffPanel(Static):
    """Hidden until a second model is chosen; then the current tensor's diff to it."""

    DEFAULT_CSS = """
    DiffPanel { height: auto; display: none; color: $text; margin-top: 1; border-left: thick $accent; padding-left: 1; }
    DiffPanel.-on { display: block; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self.other: Any = None
        self.label = ""
        self.rows: dict[str, dict[str, Any] | None] = {}  # by tensor name, for this pair of models
        self.current: str | None = None
        self._store: Any = None
        self._job = 0
        self.text = ""

    def _say(self, text: str) -> None:
        self.text = text
        self.update(text)

    def set_other(self, store: Any, label: str) -> None:
        """Compare with ``store`` from now on (None: stop comparing)."""
        self.other, self.label = store, label
        self.rows.clear()
        self.set_class(store is not None, "-on")
        if self._store is not None and self.current is not None:
            self.show(self._store, self.current)

    def show(self, store: Any, name: str | None) -> None:
        """The diff of ``name`` (a tensor of ``store``, the open model) to the second model."""
        if store is not self._store:
            self.rows.clear()
        self._store, self.current = store, name
        self._job += 1
        if self.other is None or name is None:
            return
        if name in self.rows:
            self._paint(name)
            return
        self._say(f"vs {self.label}: computing ...")
        self._compute(store, self.other, name, self._job)

    @work(thread=True, exclusive=True, exit_on_error=False, group="tensor-diff")
    def _compute(self, a: Any, b: Any, name: str, job: int) -> None:
        worker = get_current_worker()
        row = backend.diff_tensor(a, b, name)
        if row is None:
            self.post_message(DiffComputed(name, None, f"vs {self.label}: no tensor {name} there", job))
        elif not worker.is_cancelled:
            self.post_message(DiffComputed(name, row, "", job))

    def on_diff_computed(self, message: DiffComputed) -> None:
        self.rows[message.name] = message.row
        if message.job == self._job:
            if message.row is None:
                self._say(message.note)
            else:
                self._paint(message.name)

    def _paint(self, name: str) -> None:
        row = self.rows.get(name)
        self._say(diff_lines(self.label, row) if row else f"vs {self.label}: no such tensor there")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "tensor-diff" and event.state == WorkerState.ERROR:
            self._say(f"vs {self.label}: failed (see the error)")
            self.app.report_error("Could not compare the tensors", event.worker.error)
