"""Command palette providers (ctrl+p): the app's own actions, the open model's tensors by name
(``layers.12`` finds every tensor of layer 12) and the stitch presets."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

# (title, action, help)
COMMANDS: list[tuple[str, str, str]] = [
    ("Open model or run", "open_model", "Pick a fetched/recent model, a run, or type a path"),
    ("Weights tab", "show_tab('weights')", "Browse tensors, statistics and figures"),
    ("Stitch tab", "show_tab('stitch')", "Layer plans and streamed generation"),
    ("Runs tab", "show_tab('runs')", "Training curves and diff vs baseline"),
    ("Activations tab", "show_tab('acts')", "Activation statistics per layer and per dimension, diffs"),
    ("Add activation results", "acts_add", "Type an activations results directory (or a folder of them)"),
    ("Compare with a second model", "compare", "Weights tab: each tensor's diff to a model, checkpoint or run (c)"),
    ("Run timeline", "timeline", "A statistic across the checkpoints of the ticked run (t)"),
    ("Run generation", "stitch_run", "Generate with the current plan"),
    ("Stop generation", "stitch_stop", "Cancel the running generation"),
    ("Toggle dark/light theme", "toggle_theme", "Switch between dark and light"),
    ("Help", "help", "Keys and what each tab does"),
    ("Quit", "quit", "Leave lminspect"),
]


class LMInspectCommands(Provider):
    async def discover(self) -> Hits:
        for title, action, help_text in COMMANDS:
            yield DiscoveryHit(title, partial(self._run, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, action, help_text in COMMANDS:
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(self._run, action), text=title, help=help_text)

    async def _run(self, action: str) -> None:
        await self.app.run_action(action)


MAX_TENSOR_HITS = 40  # a 1B model has hundreds of tensors: the best matches only


class TensorAndPlanCommands(Provider):
    """``Tensor layers.12.attn.q.weight`` (the canonical names the tree shows) opens it in the
    Weights tab, revealed in the tree; ``Plan <preset>`` puts the
    preset into the Stitch tab's plan field."""

    def _items(self) -> list[tuple[str, str, str]]:
        from lminspect.tui import backend

        items: list[tuple[str, str, str]] = []
        store = getattr(self.app, "store", None)
        if store is not None:
            items += [(f"Tensor {name}", "tensor", name) for name in backend.tensor_names(store)]
        try:
            presets = backend.stitch_presets(backend.n_layers(store) if store is not None else None)
        except Exception:  # noqa: BLE001 - the palette must never fail
            presets = {}
        items += [(f"Plan {name}: {desc}", "plan", name) for name, desc in presets.items()]
        return items

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        scored = []
        for title, kind, value in self._items():
            score = matcher.match(title)
            if score > 0:
                scored.append((score, title, kind, value))
        scored.sort(key=lambda t: -t[0])
        tensors = 0
        for score, title, kind, value in scored:
            if kind == "tensor":
                tensors += 1
                if tensors > MAX_TENSOR_HITS:
                    continue
            yield Hit(score, matcher.highlight(title), partial(self._open, kind, value), text=title)

    async def _open(self, kind: str, value: str) -> None:
        await self.app.run_action(f"open_{kind}({value!r})")
