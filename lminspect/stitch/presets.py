"""Seed 002's layer plans, written for a 32-layer Llama and rescaled to any depth."""

from __future__ import annotations

import re

from lminspect.errors import UserError

SEED_DEPTH = 32  # seed 002 was written against 32-layer Llama-2-7b-chat

# name -> (spec on the 32-layer model, as seed 002 describes it; description on 32 layers)
PRESETS: dict[str, tuple[str, str]] = {
    "baseline": ("all", "the untouched model"),
    "0-23_27-31": ("0-23,27-31", "skips layers 24-26"),
    "15_single_skip": ("skip:15", "skips only layer 15"),
    "skip_near_end_keep_last_two": ("0-26,30-31", "skips 27-29, keeps the last 2"),
    "all_except_last_two": ("0-29", "every layer but the last 2 (30-31)"),
    "2_3rd_of_llama": ("0-10,21-31", "skips layers 11-20"),
    "2_3rds_plus_llama": ("0-10,12,14,16,18,20-31", "skips layers 11, 13, 15, 17, 19"),
    "mid_expansion_with_repeats": (
        "0-5,10-13,14-19r2,20-24,29-31",
        "skips 6-9, 25-28, runs the block 14-19 twice",
    ),
    "only_even_layers": ("even", "only the even layers"),
    "0-7": ("0-7", "only the first 8 layers (0-7)"),
    "first_last_2_with_skips": (
        "0r2,1-14,17-23,26-30,31r2",
        "repeats the first and last layer, skips 15-16, 24-25",
    ),
    "first_last_8r2": ("0-7r2,24-31r2", "only layers 0-7, 24-31, each block run twice"),
    "15r3_23r3_31r3": ("15r3,23r3,31r3", "only layers 15, 23, 31, each three times"),
}

# The descriptions with their layer numbers left open, filled from the plan at a model's depth
# (preset_description), so a rescaled plan and its description name the same layers. On 32
# layers each gives PRESETS' text (tested).
_DESCRIBED: dict[str, str] = {
    "0-23_27-31": "skips {skipped_l}",
    "15_single_skip": "skips only {skipped_l}",
    "skip_near_end_keep_last_two": "skips {skipped}, keeps the last {n_after}",
    "all_except_last_two": "every layer but the last {n_skipped} ({skipped})",
    "2_3rd_of_llama": "skips {skipped_l}",
    "2_3rds_plus_llama": "skips {skipped_l}",
    "mid_expansion_with_repeats": "skips {skipped}, runs the block {repeated} twice",
    "0-7": "only the first {n_kept} layers ({kept})",
    "first_last_2_with_skips": "repeats the first and last layer, skips {skipped}",
    "first_last_8r2": "only {kept_l}, each block run twice",
    "15r3_23r3_31r3": "only {kept_l}, each three times",
}


def preset_description(name: str, n_layers: int) -> str:
    """A preset's description in the layer numbers of its plan on an ``n_layers`` model."""
    from lminspect.stitch.grammar import _parse_string, _runs

    template = _DESCRIBED.get(name)
    if template is None:
        if name not in PRESETS:
            raise UserError(f"unknown preset '{name}' (see lminspect stitch presets)")
        return PRESETS[name][1]  # no layer numbers in it
    used = [c.index for c in _parse_string(preset_spec(name, n_layers), n_layers)]
    skipped = [i for i in range(n_layers) if i not in used]
    kept = sorted(set(used))

    def words(ints: list[int]) -> str:
        return _runs(ints).replace(",", ", ") or "none"

    def layers(ints: list[int]) -> str:
        return f"layer{'s' * (len(ints) != 1)} {words(ints)}"

    return template.format(skipped=words(skipped), kept=words(kept), n_kept=len(kept), n_skipped=len(skipped),
                           skipped_l=layers(skipped), kept_l=layers(kept),
                           repeated=words(sorted(i for i in kept if used.count(i) > 1)),
                           n_after=n_layers - 1 - max(skipped, default=n_layers - 1))


def _scale_index(i: int, n: int) -> int:
    """A single 32-layer index -> the layer whose centre is nearest (half up), clamped."""
    return max(0, min(n - 1, int((i + 0.5) * n / SEED_DEPTH)))


def _scale_bound(b: int, n: int) -> int:
    """A half-open range boundary on 32 layers -> round(b * n / 32), half up."""
    return int(b * n / SEED_DEPTH + 0.5)


def preset_spec(name: str, n_layers: int) -> str:
    """A preset's grammar for an ``n_layers`` model (identical to the seed's on 32 layers).

    Ranges scale by their half-open boundaries (``[a, b+1)`` -> ``[round(a*n/32),
    round((b+1)*n/32))``, never empty); single layers map to the layer whose centre is
    nearest; ``even``/``odd``/``all``/``skip:`` keep their meaning; repeats and scales are kept.
    """
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}' (see lminspect stitch presets)")
    spec = PRESETS[name][0]
    if n_layers == SEED_DEPTH:
        return spec
    out = []
    for item in spec.split(","):  # preset specs are comma lists (no '_' or spaces)
        prefix = ""
        if item.startswith("skip:"):
            prefix, item = "skip:", item[5:]
        m = re.match(r"^(\d+)(?:-(\d+))?(.*)$", item)
        if not m:
            out.append(prefix + item)
            continue
        a, b, rest = int(m[1]), m[2], m[3]
        if b is None:
            out.append(f"{prefix}{_scale_index(a, n_layers)}{rest}")
            continue
        lo = min(_scale_bound(a, n_layers), n_layers - 1)
        hi = max(lo + 1, min(_scale_bound(int(b) + 1, n_layers), n_layers))
        out.append(f"{prefix}{lo}{rest}" if hi - lo == 1 else f"{prefix}{lo}-{hi - 1}{rest}")
    return ",".join(out)
