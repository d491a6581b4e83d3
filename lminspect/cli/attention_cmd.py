"""``lminspect attention``: one layer's attention as a heatmap (coloured, or a character ramp when
piped) and its 2-D FFT; ``--out`` keeps the arrays."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from lminspect.cli.stitch_cmd import MODEL_HELP, PLAN_HELP, _console, _load
from lminspect.cli.threads import Threads
from lminspect.runtime import run_summary, set_threads

ATTENTION_FILES = ("attn_probs.npy", "attn_fft.npy", "tokens.json")  # what `attention --out` writes
_CMAP = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]  # viridis stops


def _colour(x: float) -> str:
    x = min(1.0, max(0.0, x)) * (len(_CMAP) - 1)
    i = min(int(x), len(_CMAP) - 2)
    f = x - i
    r, g, b = (int(a + (c - a) * f) for a, c in zip(_CMAP[i], _CMAP[i + 1], strict=True))
    return f"rgb({r},{g},{b})"


RAMP = " .:-=+*#%@"  # low -> high: the heatmap without colour (piped, saved as text)


def heatmap_text(mat: Any, title: str = "", labels: list[str] | None = None, color: bool = True):
    """A matrix as a rich Text (rows = queries, columns = keys), min-max scaled: coloured
    blocks in a terminal, a character ramp without colour; rows labelled with their token,
    columns with their position, and a scale line."""
    import numpy as np
    from rich.text import Text

    m = np.asarray(mat, dtype=np.float64)
    finite = m[np.isfinite(m)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scale = (hi - lo) or 1.0
    t = Text(f"{title}\n" if title else "")
    names = [repr(s)[1:-1][:12] for s in labels] if labels else [""] * m.shape[0]
    lw = max((len(s) for s in names), default=0)
    pad = " " * (lw + 5)
    t.append(pad + "".join(f"{j:<2}"[-2:] for j in range(m.shape[1])) + "  <- key position\n")
    for i, row in enumerate(m):
        t.append(f"{i:>3} {names[i].rjust(lw)} ")
        for v in row:
            x = (v - lo) / scale if np.isfinite(v) else 0.0
            if color:
                t.append("██", style=_colour(x) if np.isfinite(v) else "black")
            else:
                c = RAMP[min(len(RAMP) - 1, int(x * len(RAMP)))]
                t.append(c * 2)
        t.append("\n")
    t.append("scale: ")
    if color:
        for k in range(10):
            t.append("██", style=_colour(k / 9))
    else:
        t.append(" ".join(RAMP[1:]).join("''"))
    t.append(f"  {lo:.3g} .. {hi:.3g} (rows: query tokens; columns: key positions)\n")
    return t


def register(app: typer.Typer) -> None:
    """Add ``attention`` to the main app."""
    app.command("attention", rich_help_panel="Stitching")(attention)


def attention(
    model: str = typer.Argument(..., help=MODEL_HELP),
    prompt: str | None = typer.Argument(None, help="Text to look at (default 'Once upon a time').",
                                        show_default=False),
    prompt_opt: str | None = typer.Option(None, "--prompt", hidden=True),  # the old spelling
    plan: str = typer.Option("all", "--plan", "-p", help=PLAN_HELP),
    layer: int | None = typer.Option(None, "--layer", "-l", help="Plan position to show (default: the last)."),
    head: int | None = typer.Option(None, "--head", help="Head to show (default: mean over heads)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder: attn_probs.npy \\[pos, head, T, T], "
                                    "attn_fft.npy (log|fftshift(fft2)|) and tokens.json go there."),
    fft: bool = typer.Option(True, "--fft/--no-fft", help="Also show the 2-D FFT magnitude."),
    save: Path | None = typer.Option(None, "--save", help="Also save the attention heatmap as PNG or SVG "
                                     "(needs the \\[figures] extra)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the files of an earlier --out, or an "
                                   "existing --save file."),
    threads: Threads = None,
) -> None:
    """Show where one layer's attention looks, as a heatmap, and its 2-D FFT.

    In a terminal the heatmap is coloured; piped, it uses the character ramp ' .:-=+*#%@'.

    Example: lminspect attention smollm2 "Once upon a time" --layer 20 --head 3 --save attn.png
    """
    from lminspect.stitch.plans import check_plan_early

    check_plan_early(plan)  # a typo is one line at once, before torch and the model load
    import json

    from lminspect.cli.aliases import prompt_of

    prompt = prompt_of(prompt, prompt_opt, 'lminspect attention MODEL "TEXT"', default="Once upon a time")
    import numpy as np
    import torch

    from lminspect.errors import UserError
    from lminspect.fsutil import check_output
    from lminspect.stitch import parse_plan

    if out is not None:
        check_output(out, kind="dir", overwrite=False, allow_nonempty=True, inputs=(model, plan))
        for name in ATTENTION_FILES:
            check_output(out / name, kind="file", overwrite=overwrite, inputs=(model, plan))
    if save is not None:
        from lminspect.figures import check_figure_path

        check_figure_path(save, overwrite, (model, plan))
    n_threads = set_threads(threads)
    _, lm, tok = _load(model)
    from lminspect.validate import plan_given

    plan_given(plan)
    p = parse_plan(plan, lm.n_layers)
    ids = tok.encode(prompt)
    if not ids:
        raise UserError("empty prompt")
    if len(ids) > lm.context_length:
        raise UserError(f"prompt of {len(ids)} tokens exceeds the model's context of {lm.context_length}")
    from lminspect.limits import check_memory

    n_head = getattr(lm.config, "n_head", 1)  # probabilities (fp32 twice) and their complex128 FFT, per position
    check_memory(f"attention maps of {len(ids)} tokens x {len(p)} positions", len(p) * n_head * len(ids) ** 2 * 28)
    _, acts = lm.run_with_cache(torch.tensor([ids]), sites=["attn_probs"], plan=p)
    from lminspect.models.sites import site_name

    probs = np.stack([acts[site_name("attn_probs", i)][0].float().numpy() for i in range(len(p))])  # [pos, H, T, T]
    pos = len(p) - 1 if layer is None else layer
    if not 0 <= pos < len(p):
        raise UserError(f"--layer {pos} is out of range; the plan has {len(p)} positions (0-{len(p) - 1})")
    n_head = probs.shape[1]
    if head is not None and not 0 <= head < n_head:
        raise UserError(f"--head {head} is out of range; the model has {n_head} heads (0-{n_head - 1})")
    spec = np.fft.fftshift(np.fft.fft2(probs, axes=(-2, -1)), axes=(-2, -1))
    logmag = np.log1p(np.abs(spec)).astype(np.float32)
    mat = probs[pos].mean(0) if head is None else probs[pos, head]
    fmat = logmag[pos].mean(0) if head is None else logmag[pos, head]
    labels = [tok.decode([i]).replace("\n", "\\n") for i in ids]
    what = f"plan position {pos} (layer {p[pos].index}), " + ("mean of heads" if head is None else f"head {head}")
    con = _console()
    title = f"attention probabilities: {what}"
    con.print(heatmap_text(mat, title, labels, color=con.is_terminal))
    if fft:
        con.print(heatmap_text(fmat, f"log(1+|fftshift(fft2)|): {what}", color=con.is_terminal))
    if save is not None:
        from lminspect.figures import save_heatmap

        save_heatmap(save, mat, title=title, xlabels=labels, ylabels=labels, xlabel="key token",
                     ylabel="query token", overwrite=overwrite)
        print(f"saved {save}", file=sys.stderr)
    if out is not None:
        from lminspect.fsutil import atomic_path, atomic_write_text

        out.mkdir(parents=True, exist_ok=True)
        for name, arr in zip(ATTENTION_FILES, (probs, logmag), strict=False):
            with atomic_path(out / name) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, arr)
        atomic_write_text(out / "tokens.json", json.dumps({"ids": ids, "tokens": labels,
                                                           "plan": [c.index for c in p]}) + "\n")
        con.print(f"saved {out}/attn_probs.npy {tuple(probs.shape)} and attn_fft.npy", style="dim", markup=False)
    print(run_summary(f"attention of {len(ids)} tokens at {len(p)} plan positions", n_threads), file=sys.stderr)
