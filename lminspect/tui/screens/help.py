"""The help screen (F1 / ?): what each tab does and the keys."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# lminspect tui

A workbench for taking small language models apart. Everything slow runs in
the background; the interface stays live while statistics and tokens arrive.

## Tabs

* **Weights**: the model's tensors grouped by layer and component. Select a
  tensor (Enter or click) to see its shape and size at once, then statistics,
  a histogram, a |W| heatmap, the singular-value spectrum and, for attention
  projections, per-head norms. Results are cached in memory and on disk.
  Select a group instead for its tensors' statistics: on `layers`, one
  statistic (alpha, stable rank, ...) per layer and component, table and plot.
* **Stitch**: type a layer plan (checked as you type; the error names the
  column), a prompt and generation settings. **Run** streams tokens with tok/s;
  **Compare** streams the unstitched baseline beside the plan; **Stop** cancels
  within one token. The model is loaded on the first run. **Lens** (`ctrl+l`)
  reads the next token out after every plan position (with Compare ticked, for
  the baseline too) and plots the lens target's probability.
* **Runs**: each run shows its experiment, steps, last loss and status. Tick
  runs to plot a metric (loss, val_loss, lr, ...) over tokens, steps or FLOPs,
  accuracy, and the difference against the first ticked run (the baseline).
  Smoothing is a moving-average window. Runs still training refresh by themselves.
* **Activations**: results directories of `lminspect activations` (`--acts DIR`,
  or type a path). Tick one: per layer, the median and max over dimensions of
  each dimension's std and |x| max (log scale: the layers whose max runs away
  hold massive activations), a table of the kind's sites, and for the
  highlighted site one statistic per dimension with its top dimensions. Tick a
  second to diff it against the first, as `activations-diff` does. Directories
  collected from the open model say "this model".

## Keys

| key | action |
|---|---|
| `w` / `s` / `r` / `a` | Weights / Stitch / Runs / Activations tab |
| `o` | open another model |
| `ctrl+p` | command palette: actions, tensors by name (`layers.12`), plan presets |
| `ctrl+s` | save one of the tab's figures: PNG or SVG (the `[figures]` extra) or text (`.txt`) |
| `ctrl+t` | dark / light theme |
| `F1` or `?` | this help |
| `q` or `ctrl+q` | quit |
| `escape` | close this help; in a text field: leave it (letter keys work again) |

In the Stitch tab, `ctrl+r` runs, `ctrl+x` stops and `ctrl+l` reads the lens.
A run picked with `o` opens its newest checkpoint's weights and ticks its curves.
"""


class HelpScreen(ModalScreen[None]):
    """Modal help text; any of escape/q/F1 closes it."""

    BINDINGS = [
        Binding("escape,q,f1,question_mark", "dismiss_help", "Close", show=True),
    ]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90%; max-width: 100; height: 90%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(HELP)

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
