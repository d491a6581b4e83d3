"""Layer plans: which decoder blocks a model runs, in which order, and how loudly.

Seed 002 ("Frankenllama") skipped and repeated Llama decoder layers by editing
``modeling_llama.py`` by hand. Here a *plan* is data: a ``list[LayerCall]`` that
the engine executes (``model.forward(ids, plan=plan)``), parsed from

* the compact grammar (``"0-23,27-29"``, ``"15r3*0.5"``, ``"skip:15"``; see
  :data:`GRAMMAR_HELP`), whose ranges are **inclusive** as seed 002 writes them;
* a list of ints (or of ``LayerCall``);
* a mergekit passthrough config (``slices: [{sources: [{model, layer_range}]}]``
  or the short ``slices: [{layer_range: [0, 24], scale: 0.5}]``), whose
  ``layer_range`` is **half-open** as mergekit defines it; given as a dict or as a
  YAML/JSON/TOML file;
* a preset name from seed 002 (:data:`PRESETS`), rescaled to the model's depth.

Plans share weights: :class:`StitchedModel` is a view (model + plan), and
:func:`export_stitched` writes a HF directory with the weights duplicated per
occurrence only when a standalone copy is wanted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lminspect.errors import UserError
from lminspect.models.layercall import LayerCall, full_plan

__all__ = [
    "GRAMMAR_HELP",
    "PRESETS",
    "LayerCall",
    "PlanSummary",
    "StitchedModel",
    "describe_plan",
    "export_stitched",
    "full_plan",
    "load_plan_file",
    "load_plans",
    "parse_plan",
    "plan_to_string",
    "preset_spec",
    "stitch",
]

GRAMMAR_HELP = """\
Plan grammar (comma-separated items; ranges are INCLUSIVE, as seed 002 writes them):
  7            layer 7
  0-23         layers 0..23 (24 layers); 5-2 runs 5,4,3,2
  15r3         layer 15 three times;  14-19r2  the block 14..19 twice
  all          every layer once;  even / odd  the even / odd layers
  skip:27-29   drop layers 27..29 (also -27-29, skip:15); with no other item it drops from 'all'
  ITEM*0.5     scale both residual branches of each occurrence (15r3*0.5, 14-19*0.8)
  ITEM*attn=0.5 / ITEM*mlp=0.5   scale one branch only (combinable: 7*attn=0.5*mlp=2)
'_' also separates items, so seed 002's config names work: 0-23_27-31, 15r3_23r3_31r3.
A plan may also be a preset name (lminspect stitch presets) or a YAML/JSON/TOML file with
mergekit passthrough slices; mergekit's layer_range [0, 24] is HALF-OPEN (layers 0..23)."""

_EXPECTED = (
    "expected N, A-B (inclusive), NrK, A-BrK, all, even, odd, skip:A-B or -A-B, "
    "optionally followed by *S, *attn=S or *mlp=S"
)
_ITEM_RE = re.compile(
    r"^(?:(?P<kw>all|even|odd)|(?P<a>\d+)(?:-(?P<b>\d+))?)"
    r"(?:r(?P<rep>\d+))?"
    r"(?P<scales>(?:\*[^*]+)*)$"
)
_SKIP_RE = re.compile(r"^(?:skip:|-)(?P<a>\d+)(?:-(?P<b>\d+))?$")
_SCALE_RE = re.compile(r"^(?:(?P<branch>attn|mlp)=)?(?P<val>[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)$")
_SEP_RE = re.compile(r"[,_\s]+")


# --------------------------------------------------------------------------- grammar


def _tokens(spec: str) -> list[tuple[str, int]]:
    """Split on separators, keeping each item's 1-based column for error messages."""
    out: list[tuple[str, int]] = []
    pos = 0
    for m in _SEP_RE.finditer(spec):
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


def _parse_scales(text: str, item: str, col: int) -> tuple[float, float]:
    attn = mlp = 1.0
    for part in filter(None, text.split("*")):
        m = _SCALE_RE.match(part)
        if not m:
            raise UserError(f"bad plan item '{item}' at column {col}: bad scale '*{part}'; {_EXPECTED}")
        val = float(m["val"])
        if m["branch"] in (None, "attn"):
            attn = val
        if m["branch"] in (None, "mlp"):
            mlp = val
    return attn, mlp


def _range(a: int, b: int) -> list[int]:
    return list(range(a, b + 1)) if a <= b else list(range(a, b - 1, -1))


def _parse_string(spec: str, n_layers: int) -> list[LayerCall]:
    items = _tokens(spec.lower())
    if not items:
        raise UserError("empty plan: give layers such as '0-23,27-29' or 'all'")
    positive: list[LayerCall] = []
    saw_positive = False
    skipped: set[int] = set()
    for item, col in items:
        m = _SKIP_RE.match(item)
        if m:
            a = _check_index(int(m["a"]), n_layers, item, col)
            b = _check_index(int(m["b"]), n_layers, item, col) if m["b"] else a
            skipped.update(_range(a, b))
            continue
        m = _ITEM_RE.match(item)
        if not m:
            raise UserError(f"bad plan item '{item}' at column {col}: {_EXPECTED}")
        saw_positive = True
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
        attn, mlp = _parse_scales(m["scales"] or "", item, col)
        positive.extend(LayerCall(i, attn, mlp) for _ in range(rep) for i in idx)
    if not saw_positive:
        positive = full_plan(n_layers)
    plan = [c for c in positive if c.index not in skipped]
    if not plan:
        raise UserError(f"plan '{spec}' leaves no layers to run")
    return plan


# --------------------------------------------------------------------------- mergekit / files


def _slice_number(dicts: tuple[Any, ...], key: str, default: float, where: str) -> float:
    """A slice option (``scale``, ``attn_scale``, ...) from the source, the slice or their ``parameters``."""
    for d in dicts:
        if isinstance(d, Mapping) and key in d:
            try:
                return float(d[key])
            except (TypeError, ValueError):
                raise UserError(f"{where}: {key} must be a number") from None
    return default


def _plan_from_slices(slices: Any, n_layers: int, where: str) -> list[LayerCall]:
    if not isinstance(slices, list) or not slices:
        raise UserError(f"{where}: 'slices' must be a non-empty list")
    plan: list[LayerCall] = []
    models: set[str] = set()
    for k, sl in enumerate(slices):
        if not isinstance(sl, Mapping):
            raise UserError(f"{where}: slice {k} must be a mapping with 'layer_range' or 'sources'")
        src: Mapping[str, Any] = sl
        if "sources" in sl:
            sources = sl["sources"]
            if not isinstance(sources, list) or len(sources) != 1:
                raise UserError(
                    f"{where}: slice {k} has {len(sources) if isinstance(sources, list) else '?'} sources; "
                    "only passthrough stitching (one source per slice) is supported"
                )
            src = sources[0]
            if not isinstance(src, Mapping):
                raise UserError(f"{where}: slice {k} source must be a mapping")
            if src.get("model") is not None:
                models.add(str(src["model"]))
        rng = src.get("layer_range", sl.get("layer_range"))
        if (
            not isinstance(rng, list | tuple)
            or len(rng) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in rng)
        ):
            raise UserError(f"{where}: slice {k} needs layer_range: [start, end] (half-open, ints)")
        a, b = rng
        if not (0 <= a < b <= n_layers):
            raise UserError(
                f"{where}: slice {k} layer_range [{a}, {b}] is out of range; "
                f"the model has {n_layers} layers (half-open ranges from [0, 1] to [0, {n_layers}])"
            )

        dicts = (src, sl, src.get("parameters") or {}, sl.get("parameters") or {})
        both = _slice_number(dicts, "scale", 1.0, f"{where}: slice {k}")
        attn = _slice_number(dicts, "attn_scale", both, f"{where}: slice {k}")
        mlp = _slice_number(dicts, "mlp_scale", both, f"{where}: slice {k}")
        rep = int(_slice_number(dicts, "repeat", 1.0, f"{where}: slice {k}"))
        plan.extend(LayerCall(i, attn, mlp) for _ in range(rep) for i in range(a, b))
    if len(models) > 1:
        raise UserError(
            f"{where}: slices name different models ({', '.join(sorted(models))}); "
            "stitching layers of different models is not supported"
        )
    return plan


def _read_structured(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            return json.loads(text)
        if suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        import yaml

        return yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - every parser's error becomes one line
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot parse plan file {path}: {msg}") from None


_PLAN_FILE_SUFFIXES = (".yaml", ".yml", ".json", ".toml")


def _from_mapping(obj: Mapping[str, Any], n_layers: int, where: str) -> list[LayerCall]:
    if "slices" in obj:
        return _plan_from_slices(obj["slices"], n_layers, where)
    for key in ("plan", "layers"):
        if key in obj:
            return parse_plan(obj[key], n_layers)
    raise UserError(f"{where}: expected a 'slices' list (mergekit) or a 'plan' entry")


def load_plan_file(path: str | Path, n_layers: int) -> list[LayerCall]:
    """One plan from a YAML/JSON/TOML file (mergekit slices, or ``plan: "0-23,27-29"``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"plan file not found: {path}")
    obj = _read_structured(path)
    if isinstance(obj, list):
        return parse_plan(obj, n_layers)
    if not isinstance(obj, Mapping):
        raise UserError(f"{path}: a plan file must hold a mapping with 'slices' or 'plan'")
    return _from_mapping(obj, n_layers, str(path))


def parse_plan(spec: Any, n_layers: int) -> list[LayerCall]:
    """Resolve any plan spec to a ``list[LayerCall]`` for a model with ``n_layers`` blocks.

    ``None`` or ``""`` is the full model. Bad specs raise ``UserError`` naming the
    item and its column, or the file and slice.
    """
    if n_layers < 1:
        raise UserError(f"cannot stitch a model with {n_layers} layers")
    if spec is None:
        return full_plan(n_layers)
    if isinstance(spec, Path):
        return load_plan_file(spec, n_layers)
    if isinstance(spec, Mapping):
        return _from_mapping(spec, n_layers, "plan")
    if isinstance(spec, list | tuple):
        plan: list[LayerCall] = []
        for k, x in enumerate(spec):
            if isinstance(x, LayerCall):
                _check_index(x.index, n_layers, str(x.index), k + 1)
                plan.append(x)
            elif isinstance(x, int) and not isinstance(x, bool):
                plan.append(LayerCall(_check_index(x, n_layers, str(x), k + 1)))
            elif isinstance(x, str):
                plan.extend(_parse_string(x, n_layers))
            else:
                raise UserError(f"bad plan entry {x!r} at position {k}: expected a layer index")
        if not plan:
            raise UserError("empty plan")
        return plan
    if isinstance(spec, str):
        s = spec.strip()
        if not s:
            return full_plan(n_layers)
        if s in PRESETS:
            return _parse_string(preset_spec(s, n_layers), n_layers)
        if s.lower().endswith(_PLAN_FILE_SUFFIXES):
            return load_plan_file(s, n_layers)
        return _parse_string(s, n_layers)
    raise UserError(f"cannot use {type(spec).__name__} as a layer plan")


# --------------------------------------------------------------------------- printing


def _fmt(x: float) -> str:
    s = f"{x:g}"
    return s if float(s) == x else repr(x)


def _scale_suffix(attn: float, mlp: float) -> str:
    if attn == mlp:
        return "" if attn == 1.0 else f"*{_fmt(attn)}"
    out = ""
    if attn != 1.0:
        out += f"*attn={_fmt(attn)}"
    if mlp != 1.0:
        out += f"*mlp={_fmt(mlp)}"
    return out


def plan_to_string(plan: Iterable[LayerCall], n_layers: int | None = None) -> str:
    """Compact grammar for a plan; ``parse_plan(plan_to_string(p), n) == p``.

    Runs of consecutive ascending layers with equal scales become ``A-B``;
    identical adjacent runs become ``rK``. With ``n_layers`` the full plan prints as ``all``.
    """
    plan = list(plan)
    if n_layers is not None and plan == full_plan(n_layers):
        return "all"
    segs: list[tuple[int, int, float, float]] = []
    for c in plan:
        if segs:
            a, b, at, ml = segs[-1]
            if c.index == b + 1 and (at, ml) == (c.attn_scale, c.mlp_scale) and b >= a:
                segs[-1] = (a, c.index, at, ml)
                continue
        segs.append((c.index, c.index, c.attn_scale, c.mlp_scale))
    items: list[str] = []
    k = 0
    while k < len(segs):
        rep = 1
        while k + rep < len(segs) and segs[k + rep] == segs[k]:
            rep += 1
        a, b, at, ml = segs[k]
        s = str(a) if a == b else f"{a}-{b}"
        if rep > 1:
            s += f"r{rep}"
        items.append(s + _scale_suffix(at, ml))
        k += rep
    return ",".join(items)


@dataclass
class PlanSummary:
    """What a plan does to a model, for tables and ``stitch show``."""

    n_layers: int  # blocks in the model
    calls: int  # blocks run per token (len(plan)): compute relative to baseline is calls / n_layers
    unique: int  # distinct blocks used
    skipped: list[int]  # blocks never run
    repeated: dict[int, int]  # block -> times run, for blocks run more than once
    scaled: int  # occurrences with a non-unit branch scale
    params_touched: float  # fraction of the model's parameters the plan reads (embeddings/norm/head included)
    compute: float  # calls / n_layers
    text: str = field(default="")  # compact grammar

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_layers": self.n_layers,
            "calls": self.calls,
            "unique": self.unique,
            "skipped": self.skipped,
            "repeated": {str(k): v for k, v in self.repeated.items()},
            "scaled": self.scaled,
            "params_touched": self.params_touched,
            "compute": self.compute,
            "plan": self.text,
        }


def _layer_param_counts(model: Any) -> tuple[list[int], int]:
    per_layer = [sum(p.numel() for p in layer.parameters()) for layer in model.layers]
    total = sum(p.numel() for p in model.parameters())
    return per_layer, total


def describe_plan(plan: list[LayerCall], n_layers: int | None = None, *, model: Any = None) -> PlanSummary:
    """Layers run, skipped and repeated, and the fraction of parameters the plan touches.

    With a ``model``, parameter counts are exact (shared embeddings, norms and the head
    always count as touched); without one, every block is assumed equal and only the
    decoder blocks are counted.
    """
    if n_layers is None:
        if model is None:
            raise ValueError("describe_plan needs n_layers or model")
        n_layers = len(model.layers)
    used = [c.index for c in plan]
    uniq = sorted(set(used))
    counts: dict[int, int] = {}
    for i in used:
        counts[i] = counts.get(i, 0) + 1
    if model is not None and hasattr(model, "layers") and hasattr(model, "parameters"):
        per_layer, total = _layer_param_counts(model)
        skipped_params = sum(per_layer[i] for i in range(n_layers) if i not in counts)
        touched = (total - skipped_params) / total if total else 0.0
    else:
        touched = len(uniq) / n_layers
    return PlanSummary(
        n_layers=n_layers,
        calls=len(plan),
        unique=len(uniq),
        skipped=[i for i in range(n_layers) if i not in counts],
        repeated={i: k for i, k in sorted(counts.items()) if k > 1},
        scaled=sum(1 for c in plan if (c.attn_scale, c.mlp_scale) != (1.0, 1.0)),
        params_touched=touched,
        compute=len(plan) / n_layers,
        text=plan_to_string(plan, n_layers),
    )


# --------------------------------------------------------------------------- presets

SEED_DEPTH = 32  # seed 002 was written against 32-layer Llama-2-7b-chat

# name -> (spec on the 32-layer model, as seed 002 describes it; description)
PRESETS: dict[str, tuple[str, str]] = {
    "baseline": ("all", "the untouched model"),
    "0-23_27-31": ("0-23,27-31", "skips layers 24-26"),
    "15_single_skip": ("skip:15", "skips only layer 15"),
    "skip_near_end_keep_last_two": ("0-26,30-31", "skips 27-29, keeps the last two"),
    "all_except_last_two": ("0-29", "every layer but the last two"),
    "2_3rd_of_llama": ("0-10,21-31", "skips layers 11-20"),
    "2_3rds_plus_llama": ("0-10,12,14,16,18,20-31", "skips the odd layers among 11-20"),
    "mid_expansion_with_repeats": (
        "0-5,10-13,14-19r2,20-24,29-31",
        "skips 6-9 and 25-28, runs the block 14-19 twice",
    ),
    "only_even_layers": ("even", "only the even layers"),
    "0-7": ("0-7", "only the first quarter (layers 0-7)"),
    "first_last_2_with_skips": (
        "0r2,1-14,17-23,26-30,31r2",
        "repeats the first and last layer, skips 15, 16, 24, 25",
    ),
    "first_last_8r2": ("0-7r2,24-31r2", "only the first and last 8 layers, each block run twice"),
    "15r3_23r3_31r3": ("15r3,23r3,31r3", "only layers 15, 23, 31, each three times"),
}


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
    for item, _ in _tokens(spec):
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


def load_plans(spec: str | Path | Mapping[str, Any] | None, n_layers: int) -> dict[str, list[LayerCall]]:
    """Named plans for a sweep: ``"presets"``, a comma list of preset names, or a file.

    A file (TOML/YAML/JSON) maps names to plan specs, at top level or under ``plans``;
    a spec is a grammar string, a list of ints, or a mergekit ``{slices: ...}`` mapping.
    """
    if spec is None or (isinstance(spec, str) and spec.strip() in ("", "presets")):
        return {name: parse_plan(name, n_layers) for name in PRESETS}
    obj: Any
    if isinstance(spec, Mapping):
        obj, where = spec, "plans"
    else:
        path = Path(spec)
        if path.is_file():
            obj, where = _read_structured(path), str(path)
        elif str(spec).lower().endswith(_PLAN_FILE_SUFFIXES):
            raise UserError(f"plans file not found: {spec}")
        else:
            names = [s.strip() for s in str(spec).split(",") if s.strip()]
            unknown = [s for s in names if s not in PRESETS]
            if unknown:
                raise UserError(
                    f"unknown preset '{unknown[0]}' in --plans; give 'presets', preset names "
                    "separated by commas, or a TOML/YAML/JSON file"
                )
            return {name: parse_plan(name, n_layers) for name in names}
    if not isinstance(obj, Mapping):
        raise UserError(f"{where}: expected a mapping of plan names to plans")
    if "plans" in obj:
        obj = obj["plans"]
        if isinstance(obj, list):  # [{name: ..., plan: ...}] form
            obj = {str(d.get("name", i)): d.get("plan", d) for i, d in enumerate(obj) if isinstance(d, Mapping)}
    if "slices" in obj:
        return {Path(str(spec)).stem if not isinstance(spec, Mapping) else "plan": _from_mapping(obj, n_layers, where)}
    plans: dict[str, list[LayerCall]] = {}
    for name, p in obj.items():
        try:
            plans[str(name)] = parse_plan(p, n_layers)
        except UserError as exc:
            raise UserError(f"{where}: plan '{name}': {exc.message}") from None
    if not plans:
        raise UserError(f"{where}: no plans found")
    return plans


# --------------------------------------------------------------------------- applying a plan


class StitchedModel:
    """A model seen through a plan: same weights, different layer sequence.

    Everything the engine's LM offers is forwarded; ``forward``, ``new_cache`` and
    ``run_with_cache`` pass the plan. Cheap to make: nothing is copied.
    """

    def __init__(self, model: Any, plan: Any = None) -> None:
        self.model = model
        self.plan: list[LayerCall] = parse_plan(plan, len(model.layers))

    def forward(self, input_ids: Any, *, cache: Any = None, **kw: Any) -> Any:
        return self.model.forward(input_ids, cache=cache, plan=self.plan, **kw)

    __call__ = forward

    def new_cache(self, *args: Any, **kw: Any) -> Any:
        return self.model.new_cache(self.plan, *args, **kw)

    def run_with_cache(self, input_ids: Any, sites: Any = None, **kw: Any) -> Any:
        return self.model.run_with_cache(input_ids, sites, plan=self.plan, **kw)

    def describe(self) -> PlanSummary:
        return describe_plan(self.plan, len(self.model.layers), model=self.model)

    @property
    def n_layers(self) -> int:
        return len(self.model.layers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["model"], name)

    def __repr__(self) -> str:
        return f"StitchedModel({type(self.model).__name__}, plan={plan_to_string(self.plan, self.n_layers)!r})"


def stitch(model: Any, plan: Any) -> StitchedModel:
    """``stitch(model, "0-23,27-29")``: the REPL spelling of ``StitchedModel``."""
    return StitchedModel(model, plan)


# --------------------------------------------------------------------------- export

_LLAMA_HF = {
    "embed.tokens": "model.embed_tokens",
    "norm": "model.norm",
    "head": "lm_head",
    "attn_norm": "input_layernorm",
    "mlp_norm": "post_attention_layernorm",
    "attn.q": "self_attn.q_proj",
    "attn.k": "self_attn.k_proj",
    "attn.v": "self_attn.v_proj",
    "attn.o": "self_attn.o_proj",
    "mlp.gate": "mlp.gate_proj",
    "mlp.up": "mlp.up_proj",
    "mlp.down": "mlp.down_proj",
}


def _llama_hf_name(cname: str) -> str:
    stem, _, kind = cname.rpartition(".")
    m = re.match(r"^layers\.(\d+)\.(.+)$", stem)
    if m:
        return f"model.layers.{m[1]}.{_LLAMA_HF[m[2]]}.{kind}"
    return f"{_LLAMA_HF[stem]}.{kind}"


def _gpt2_hf_state(sd: dict[str, Any]) -> dict[str, Any]:
    """Canonical GPT-2 tensors -> HF names (Conv1D weights transposed, q/k/v fused into c_attn)."""
    import torch

    out: dict[str, Any] = {}
    simple = {"embed.tokens": "transformer.wte", "embed.positions": "transformer.wpe", "norm": "transformer.ln_f"}
    sub = {"attn_norm": "ln_1", "mlp_norm": "ln_2", "attn.o": "attn.c_proj", "mlp.up": "mlp.c_fc", "mlp.down": "mlp.c_proj"}
    for cname, t in sd.items():
        stem, _, kind = cname.rpartition(".")
        if stem in simple:
            out[f"{simple[stem]}.{kind}"] = t
            continue
        if stem == "head":
            continue  # tied to wte in GPT-2
        m = re.match(r"^layers\.(\d+)\.(.+)$", stem)
        if not m:
            raise UserError(f"cannot export tensor {cname} as GPT-2")
        i, part = m[1], m[2]
        if part in ("attn.q", "attn.k", "attn.v"):
            continue
        conv = part in ("attn.o", "mlp.up", "mlp.down") and kind == "weight"
        out[f"transformer.h.{i}.{sub[part]}.{kind}"] = t.t().contiguous() if conv else t
    n = 1 + max((int(k.split(".")[1]) for k in sd if k.startswith("layers.")), default=-1)
    for i in range(n):
        q, k, v = (sd[f"layers.{i}.attn.{x}.weight"] for x in "qkv")
        out[f"transformer.h.{i}.attn.c_attn.weight"] = torch.cat([q, k, v], 0).t().contiguous()
        if f"layers.{i}.attn.q.bias" in sd:
            out[f"transformer.h.{i}.attn.c_attn.bias"] = torch.cat(
                [sd[f"layers.{i}.attn.{x}.bias"] for x in "qkv"], 0
            )
    return out


_FALCON_SUB = {
    "attn_norm": "input_layernorm",
    "mlp_norm": "post_attention_layernorm",
    "attn.o": "self_attention.dense",
    "mlp.up": "mlp.dense_h_to_4h",
    "mlp.down": "mlp.dense_4h_to_h",
}


def _falcon_fuse_qkv(q: Any, k: Any, v: Any, n_head: int, multi_query: bool) -> Any:
    """Canonical q/k/v (weights or biases) -> HF Falcon's fused ``query_key_value`` rows.

    The inverse of the weight store's split (``naming._falcon_qkv``) for the two layouts the
    engine runs: multi-query is ``[q (n_head heads), k (1 head), v (1 head)]``; the classic
    RW layout interleaves per head, ``[n_head, 3, head_dim]`` (``FalconAttention._split_heads``).
    """
    import torch

    hd = q.shape[0] // n_head
    n_kv = 1 if multi_query else n_head
    if q.shape[0] != n_head * hd or k.shape[0] != n_kv * hd or v.shape[0] != n_kv * hd:
        raise UserError(
            f"cannot export falcon attention: q/k/v have {q.shape[0]}/{k.shape[0]}/{v.shape[0]} rows, "
            f"expected {n_head * hd}/{n_kv * hd}/{n_kv * hd} for {n_head} heads"
            f"{' (multi_query)' if multi_query else ''}"
        )
    if multi_query:
        return torch.cat([q, k, v], 0)
    rest = tuple(q.shape[1:])
    parts = [t.reshape(n_head, hd, *rest) for t in (q, k, v)]
    return torch.stack(parts, 1).reshape(3 * n_head * hd, *rest)


def _falcon_hf_state(sd: dict[str, Any], hf_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical Falcon tensors -> HF ``FalconForCausalLM`` names (q/k/v fused into ``query_key_value``)."""
    if hf_cfg.get("new_decoder_architecture"):
        raise UserError(
            "stitch export supports falcon only with new_decoder_architecture=false "
            "(the RW / 7B layouts the engine runs)"
        )
    n_head = int(hf_cfg.get("num_attention_heads") or hf_cfg.get("n_head") or 0)
    if n_head < 1:
        raise UserError("cannot export falcon: config lacks num_attention_heads")
    multi_query = bool(hf_cfg.get("multi_query", True))
    out: dict[str, Any] = {}
    layers: set[str] = set()
    for cname, t in sd.items():
        stem, _, kind = cname.rpartition(".")
        if stem == "embed.tokens":
            out[f"transformer.word_embeddings.{kind}"] = t
            continue
        if stem == "norm":
            out[f"transformer.ln_f.{kind}"] = t
            continue
        if stem == "head":
            out[f"lm_head.{kind}"] = t
            continue
        m = re.match(r"^layers\.(\d+)\.(.+)$", stem)
        if not m or m[2] not in (*_FALCON_SUB, "attn.q", "attn.k", "attn.v"):
            raise UserError(f"cannot export tensor {cname} as falcon")
        i, part = m[1], m[2]
        if part in ("attn.q", "attn.k", "attn.v"):
            layers.add(i)
            continue
        out[f"transformer.h.{i}.{_FALCON_SUB[part]}.{kind}"] = t
    for i in sorted(layers, key=int):
        for kind in ("weight", "bias"):
            names = [f"layers.{i}.attn.{x}.{kind}" for x in "qkv"]
            if all(n in sd for n in names):
                out[f"transformer.h.{i}.self_attention.query_key_value.{kind}"] = _falcon_fuse_qkv(
                    *(sd[n] for n in names), n_head, multi_query
                )
            elif any(n in sd for n in names):
                raise UserError(f"cannot export falcon layer {i}: q/k/v {kind}s are incomplete")
    return out


def _hf_state(arch: str, sd: dict[str, Any], hf_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical names -> HF names: the weight store's llama mapping when present, else ours."""
    if arch == "llama":
        try:
            from lminspect.weights.naming import canonical_to_hf_llama as to_hf
        except ImportError:  # pragma: no cover - the weight store ships it
            to_hf = _llama_hf_name
        return {to_hf(k): v for k, v in sd.items()}
    if arch == "gpt2":
        return _gpt2_hf_state(sd)
    if arch == "falcon":
        return _falcon_hf_state(sd, hf_cfg)
    raise UserError(f"stitch export supports llama, gpt2 and falcon models, not {arch}")


def _arch_of(model: Any, hf_cfg: Mapping[str, Any]) -> str:
    arch = getattr(model, "arch", None) or getattr(getattr(model, "config", None), "arch", None)
    if isinstance(arch, str):
        return arch
    mt = str(hf_cfg.get("model_type", "")).lower()
    return mt or type(model).__name__.lower()


def stitched_state_dict(model: Any, plan: list[LayerCall]) -> dict[str, Any]:
    """The canonical state dict of the stitched model: one block per occurrence, scales folded.

    A branch scale ``s`` multiplies that branch's output before the residual add, which is
    exactly multiplying the branch's last projection (``attn.o``, ``mlp.down``: weight and bias) by ``s``.
    """
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    out: dict[str, Any] = {k: v.clone() for k, v in sd.items() if not k.startswith("layers.")}
    for j, call in enumerate(plan):
        prefix = f"layers.{call.index}."
        for k, v in sd.items():
            if not k.startswith(prefix):
                continue
            rest = k[len(prefix) :]
            t = v.clone()
            if rest.startswith("attn.o.") and call.attn_scale != 1.0:
                t = t * call.attn_scale
            elif rest.startswith("mlp.down.") and call.mlp_scale != 1.0:
                t = t * call.mlp_scale
            out[f"layers.{j}.{rest}"] = t.contiguous()
    return out


def export_stitched(
    model: Any,
    plan: Any,
    out_dir: str | Path,
    *,
    tokenizer_json: str | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Write a standalone HF directory of the stitched model (atomically).

    Families: llama (tied or untied head), gpt2, and falcon with ``new_decoder_architecture=false``
    (RW/ALiBi or rotary, classic or multi-query qkv, sequential or parallel attention; q/k/v
    fused back into ``query_key_value`` in HF's layout); anything else is a ``UserError`` and
    nothing is written. ``config.json`` gets ``num_hidden_layers`` (``n_layer`` for GPT-2) =
    ``len(plan)`` and ``lminspect_plan``; ``model.safetensors`` holds HF names with each
    occurrence's weights duplicated and its scales folded in; ``tokenizer.json`` is copied when given.
    """
    from safetensors.torch import save_file

    from lminspect.fsutil import atomic_dir

    base = model.model if isinstance(model, StitchedModel) else model
    n = len(base.layers)
    plan = parse_plan(plan if plan is not None else getattr(model, "plan", None), n)
    cfg = base.config
    hf_cfg: dict[str, Any] = dict(cfg.to_hf() if hasattr(cfg, "to_hf") else cfg)
    arch = _arch_of(base, hf_cfg)
    if arch.startswith("gpt2"):
        arch = "gpt2"
    elif "llama" in arch:
        arch = "llama"
    elif "falcon" in arch or arch in ("refinedweb", "refinedwebmodel", "rw"):
        arch = "falcon"
    sd = stitched_state_dict(base, plan)
    tied = bool(hf_cfg.get("tie_word_embeddings", arch == "gpt2"))
    if tied:
        sd.pop("head.weight", None)
    hf_sd = _hf_state(arch, sd, hf_cfg)
    for key in ("num_hidden_layers", "n_layer"):
        if key in hf_cfg or (key == "num_hidden_layers" and arch != "gpt2") or (key == "n_layer" and arch == "gpt2"):
            hf_cfg[key] = len(plan)
    if isinstance(hf_cfg.get("layer_types"), list) and len(hf_cfg["layer_types"]) == n:
        hf_cfg["layer_types"] = [hf_cfg["layer_types"][c.index] for c in plan]
    hf_cfg["lminspect_plan"] = plan_to_string(plan, n)
    hf_cfg["lminspect_source_layers"] = n
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        save_file({k: v.contiguous() for k, v in hf_sd.items()}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_cfg, indent=2, default=str) + "\n", encoding="utf-8")
        if tokenizer_json:
            (tmp / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
    return out_dir
