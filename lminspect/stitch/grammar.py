"""The compact plan grammar: ``"0-23,27-29"``, ``"15r3*0.5"``, ``"skip:15"`` <-> ``list[LayerCall]``.

Ranges are **inclusive**, as seed 002 writes them (see :data:`GRAMMAR_HELP`).
:func:`plan_to_string` prints a plan back so that parsing it again gives the same plan.
Resolving other spellings (lists, mergekit slices, files, preset names) is
:mod:`lminspect.stitch.plans`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from lminspect.errors import UserError
from lminspect.models.layercall import HeadScales, LayerCall, full_plan

GRAMMAR_HELP = """\
Plan grammar (comma-separated items; ranges are INCLUSIVE, as seed 002 writes them):
  7            layer 7
  0-23         layers 0..23 (24 layers); 5-2 runs 5,4,3,2
  15r3         layer 15 three times;  14-19r2  the block 14..19 twice
  all          every layer once;  even / odd  the even / odd layers
  skip:27-29   drop layers 27..29 (also -27-29, skip:15); with no other item it drops from 'all'
  ITEM*0.5     scale both residual branches of each occurrence (15r3*0.5, 14-19*0.8)
  ITEM*attn=0.5 / ITEM*mlp=0.5   scale one branch only (combinable: 7*attn=0.5*mlp=2)
  ITEM*heads[0,3]=0   scale attention heads 0 and 3 (0 = ablate; heads[0-3] is a range)
  ITEM*kv[1]=0        scale every query head that reads KV head 1 (GQA groups)
'_' also separates items, so seed 002's config names work: 0-23_27-31, 15r3_23r3_31r3.
A plan may also be a preset name (lminspect stitch presets) or a YAML/JSON/TOML file with
mergekit passthrough slices; mergekit's layer_range [0, 24] is HALF-OPEN (layers 0..23),
and its parameters: {scale: X} multiplies every tensor of those layers, as in mergekit
(lminspect's branch scales there are attn_scale / mlp_scale)."""

_EXPECTED = (
    "expected N, A-B (inclusive), NrK, A-BrK, all, even, odd, skip:A-B or -A-B, "
    "optionally followed by *S, *attn=S, *mlp=S, *heads[H,...]=S or *kv[G,...]=S"
)
_ITEM_RE = re.compile(
    r"^(?:(?P<kw>all|even|odd)|(?P<a>\d+)(?:-(?P<b>\d+))?)"
    r"(?:r(?P<rep>\d+))?"
    r"(?P<scales>(?:\*[^*]+)*)$"
)
_SKIP_RE = re.compile(r"^(?:skip:|-)(?P<a>\d+)(?:-(?P<b>\d+))?$")
_SCALE_RE = re.compile(r"^(?:(?P<branch>attn|mlp)=)?(?P<val>[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)$")
_HEADS_RE = re.compile(r"^(?P<kind>heads|kv)\[(?P<list>[\d,\-\s]*)\]=(?P<val>[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)$")
_SEP_RE = re.compile(r"[,_\s]+")


# --------------------------------------------------------------------------- grammar


def _tokens(spec: str) -> list[tuple[str, int]]:
    """Split on separators, keeping each item's 1-based column for error messages."""
    out: list[tuple[str, int]] = []
    pos = 0
    for m in _SEP_RE.finditer(spec):
        if spec.count("[", 0, m.start()) > spec.count("]", 0, m.start()):
            continue  # a comma inside heads[0,3] separates heads, not items
        if m.start() > pos:
            out.append((spec[pos : m.start()], pos + 1))
        pos = m.end()
    if pos < len(spec):
        out.append((spec[pos:], pos + 1))
    return out


def _check_index(i: int, n_layers: int, item: str, col: int) -> int:
    if not 0 <= i < n_layers:
        raise UserError(
            f"plan item '{item}' at column {col}: layer {i} is out of range; "
            f"the model has {n_layers} layers (0-{n_layers - 1})"
        )
    return i


@dataclass
class _Scales:
    attn: float = 1.0
    mlp: float = 1.0
    heads: dict[int, float] = field(default_factory=dict)
    kv: dict[int, float] = field(default_factory=dict)

    def call(self, index: int) -> LayerCall:
        return LayerCall(index, self.attn, self.mlp, head_scales(self.heads), head_scales(self.kv))


def head_scales(scales: dict[int, float]) -> HeadScales:
    """``{head: scale}`` -> the sorted tuple ``LayerCall`` keeps (unit scales dropped)."""
    return tuple(sorted((int(h), float(v)) for h, v in scales.items() if float(v) != 1.0))


def _head_list(text: str, item: str, col: int) -> list[int]:
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        a, dash, b = part.partition("-")
        if not a.isdigit() or (dash and not b.isdigit()):
            raise UserError(f"bad plan item '{item}' at column {col}: bad head list '[{text}]' (expected 0,3 or 0-3)")
        out.extend(_range(int(a), int(b)) if b else [int(a)])
    if not out:
        raise UserError(f"bad plan item '{item}' at column {col}: empty head list '[]'")
    return out


def _parse_scales(text: str, item: str, col: int) -> _Scales:
    sc = _Scales()
    for part in filter(None, text.split("*")):
        h = _HEADS_RE.match(part)
        if h:
            target = sc.heads if h["kind"] == "heads" else sc.kv
            for i in _head_list(h["list"], item, col):
                target[i] = float(h["val"])
            continue
        m = _SCALE_RE.match(part)
        if not m:
            raise UserError(f"bad plan item '{item}' at column {col}: bad scale '*{part}'; {_EXPECTED}")
        val = float(m["val"])
        if not math.isfinite(val):
            raise UserError(f"bad plan item '{item}' at column {col}: scale '*{part}' is not a finite number")
        if m["branch"] in (None, "attn"):
            sc.attn = val
        if m["branch"] in (None, "mlp"):
            sc.mlp = val
    return sc


def check_plan_calls(n: int, where: str) -> None:
    """Refuse a plan of more layer calls than any model run could use (``0r99999999999``)."""
    from lminspect.limits import MAX_PLAN_CALLS, check_count

    check_count(f"{where}: layer calls", n, MAX_PLAN_CALLS)


def _range(a: int, b: int) -> list[int]:
    return list(range(a, b + 1)) if a <= b else list(range(a, b - 1, -1))


def _parse_item(item: str, col: int, n_layers: int, positive: list[LayerCall], skipped: set[int]) -> bool:
    """Add one plan item's calls to ``positive`` (or its skipped layers to ``skipped``); whether
    it was a positive item."""
    m = _SKIP_RE.match(item)
    if m:
        a = _check_index(int(m["a"]), n_layers, item, col)
        b = _check_index(int(m["b"]), n_layers, item, col) if m["b"] else a
        skipped.update(_range(a, b))
        return False
    m = _ITEM_RE.match(item)
    if not m:
        raise UserError(f"bad plan item '{item}' at column {col}: {_EXPECTED}")
    if m["kw"] == "all":
        idx = list(range(n_layers))
    elif m["kw"] == "even":
        idx = list(range(0, n_layers, 2))
    elif m["kw"] == "odd":
        idx = list(range(1, n_layers, 2))
    else:
        a = _check_index(int(m["a"]), n_layers, item, col)
        b = _check_index(int(m["b"]), n_layers, item, col) if m["b"] is not None else a
        idx = _range(a, b)
    rep = int(m["rep"]) if m["rep"] is not None else 1
    if rep < 1:
        raise UserError(f"bad plan item '{item}' at column {col}: repeat count must be >= 1")
    check_plan_calls(len(positive) + rep * len(idx), f"plan item '{item}' at column {col}")
    sc = _parse_scales(m["scales"] or "", item, col)
    positive.extend(sc.call(i) for _ in range(rep) for i in idx)
    return True


def _parse_string(spec: str, n_layers: int) -> list[LayerCall]:
    items = _tokens(spec.lower())
    if not items:
        raise UserError("empty plan: give layers such as '0-23,27-29' or 'all'")
    positive: list[LayerCall] = []
    saw_positive = False
    skipped: set[int] = set()
    for item, col in items:
        try:
            saw_positive |= _parse_item(item, col, n_layers, positive, skipped)
        except UserError as e:  # the faces point at the item (the TUI draws a caret under it)
            e.column = e.column if e.column is not None else col
            raise
    if not saw_positive:
        positive = full_plan(n_layers)
    plan = [c for c in positive if c.index not in skipped]
    if not plan:
        raise UserError(f"plan '{spec}' leaves no layers to run")
    return plan



# --------------------------------------------------------------------------- printing


def _fmt(x: float) -> str:
    s = f"{x:g}"
    return s if float(s) == x else repr(x)


def _heads_suffix(kind: str, scales: HeadScales) -> str:
    by_value: dict[float, list[int]] = {}
    for h, v in scales:
        by_value.setdefault(v, []).append(h)
    return "".join(f"*{kind}[{_runs(hs)}]={_fmt(v)}" for v, hs in by_value.items())


def _runs(ints: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    parts: list[list[int]] = []
    for i in ints:
        if parts and i == parts[-1][-1] + 1:
            parts[-1].append(i)
        else:
            parts.append([i])
    return ",".join(str(p[0]) if len(p) == 1 else f"{p[0]}-{p[-1]}" for p in parts)


def _scale_suffix(c: LayerCall) -> str:
    attn, mlp = c.attn_scale, c.mlp_scale
    out = ""
    if attn == mlp:
        out = "" if attn == 1.0 else f"*{_fmt(attn)}"
    else:
        if attn != 1.0:
            out += f"*attn={_fmt(attn)}"
        if mlp != 1.0:
            out += f"*mlp={_fmt(mlp)}"
    return out + _heads_suffix("heads", c.heads) + _heads_suffix("kv", c.kv_heads)


def _same_scales(a: LayerCall, b: LayerCall) -> bool:
    return (a.attn_scale, a.mlp_scale, a.heads, a.kv_heads) == (b.attn_scale, b.mlp_scale, b.heads, b.kv_heads)


def plan_to_string(plan: Iterable[LayerCall], n_layers: int | None = None) -> str:
    """Compact grammar for a plan; ``parse_plan(plan_to_string(p), n) == p``.

    Runs of consecutive ascending layers with equal scales become ``A-B``;
    identical adjacent runs become ``rK``. With ``n_layers`` the full plan prints as ``all``.
    """
    plan = list(plan)
    if n_layers is not None and plan == full_plan(n_layers):
        return "all"
    segs: list[tuple[int, int, LayerCall]] = []  # (first, last, the scales every occurrence shares)
    for c in plan:
        if segs:
            a, b, first = segs[-1]
            if c.index == b + 1 and _same_scales(c, first) and b >= a:
                segs[-1] = (a, c.index, first)
                continue
        segs.append((c.index, c.index, c))

    def key(seg: tuple[int, int, LayerCall]) -> tuple:
        a, b, c = seg
        return a, b, c.attn_scale, c.mlp_scale, c.heads, c.kv_heads

    items: list[str] = []
    k = 0
    while k < len(segs):
        rep = 1
        while k + rep < len(segs) and key(segs[k + rep]) == key(segs[k]):
            rep += 1
        a, b, c = segs[k]
        s = str(a) if a == b else f"{a}-{b}"
        if rep > 1:
            s += f"r{rep}"
        items.append(s + _scale_suffix(c))
        k += rep
    return ",".join(items)
