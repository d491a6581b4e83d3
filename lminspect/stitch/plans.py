"""Any plan spec -> ``list[LayerCall]``: grammar strings, lists, mergekit slices, files, presets.

* the compact grammar (:mod:`lminspect.stitch.grammar`), ranges **inclusive**;
* a list of ints (or of ``LayerCall``);
* a mergekit passthrough config (``slices: [{sources: [{model, layer_range}]}]``,
  the short ``slices: [{layer_range: [0, 24]}]``, or ``models: [{model}]``), whose
  ``layer_range`` is **half-open** as mergekit defines it and whose ``scale`` means what it
  means in mergekit (:mod:`lminspect.stitch.mergekit`); given as a dict or as a
  YAML/JSON/TOML file;
* a preset name from seed 002 (:mod:`lminspect.stitch.presets`), rescaled to the model's depth.

:func:`load_plans` reads the named plan sets a sweep runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lminspect.errors import UserError
from lminspect.models.layercall import HeadScales, LayerCall, full_plan
from lminspect.stitch.grammar import _check_index, _parse_string, check_plan_calls, head_scales
from lminspect.stitch.mergekit import MergekitPlan, Occurrence, check_top, models_as_slices, slice_occurrences
from lminspect.stitch.presets import PRESETS, preset_spec


def _slice_number(dicts: tuple[Any, ...], key: str, default: float, where: str) -> float:
    """A slice option (``scale``, ``attn_scale``, ...) from the source, the slice or their ``parameters``."""
    for d in dicts:
        if isinstance(d, Mapping) and key in d:
            try:
                return float(d[key])
            except (TypeError, ValueError):
                raise UserError(f"{where}: {key} must be a number") from None
    return default


def _slice_heads(dicts: tuple[Any, ...], key: str, where: str) -> HeadScales:
    """``head_scale`` / ``kv_head_scale``: a map ``{head: scale}`` or a list with one scale per head."""
    for d in dicts:
        if isinstance(d, Mapping) and key in d:
            val = d[key]
            items = enumerate(val) if isinstance(val, list) else val.items() if isinstance(val, Mapping) else None
            try:
                if items is None:
                    raise TypeError
                scales = {int(h): float(v) for h, v in items}
            except (TypeError, ValueError):
                raise UserError(f"{where}: {key} must map head numbers to scales ({{0: 0.0, 3: 0.5}}) "
                                "or list one scale per head") from None
            if any(h < 0 for h in scales):
                raise UserError(f"{where}: {key} has a negative head number")
            return head_scales(scales)
    return ()


def _plan_from_slices(obj: Mapping[str, Any], n_layers: int, where: str) -> MergekitPlan:
    """A mergekit passthrough config (``slices`` or ``models``) -> plan, with mergekit's meaning
    of ``scale`` kept beside it (:mod:`lminspect.stitch.mergekit`)."""
    dtype, out_dtype = check_top(obj, where)
    top = obj.get("parameters") or {}
    if not isinstance(top, Mapping):
        raise UserError(f"{where}: top-level 'parameters' must be a mapping")
    slices = obj["slices"] if "slices" in obj else models_as_slices(obj.get("models"), n_layers, where)
    if not isinstance(slices, list) or not slices:
        raise UserError(f"{where}: 'slices' must be a non-empty list")
    plan: list[LayerCall] = []
    occurrences: list[Occurrence] = []
    firsts: list[Occurrence] = []
    models: list[str] = []
    for k, sl in enumerate(slices):
        src, a, b = _slice_source(sl, k, n_layers, where)
        if src.get("model") is not None and str(src["model"]) not in models:
            models.append(str(src["model"]))
        dicts = (src, sl, src.get("parameters") or {}, sl.get("parameters") or {})
        attn = _slice_number(dicts, "attn_scale", 1.0, f"{where}: slice {k}")  # lminspect's own keys
        mlp = _slice_number(dicts, "mlp_scale", 1.0, f"{where}: slice {k}")
        rep = _slice_number(dicts, "repeat", 1.0, f"{where}: slice {k}")
        for name, v in (("attn_scale", attn), ("mlp_scale", mlp)):
            if not math.isfinite(v):
                raise UserError(f"{where}: slice {k} {name} {v} is not a finite number")
        if not math.isfinite(rep) or rep < 1 or rep != int(rep):
            raise UserError(f"{where}: slice {k} repeat {rep:g} must be a whole number >= 1")
        rep = int(rep)
        check_plan_calls(len(plan) + rep * (b - a), where)
        heads = _slice_heads(dicts, "head_scale", f"{where}: slice {k}")
        kv = _slice_heads(dicts, "kv_head_scale", f"{where}: slice {k}")
        occ = slice_occurrences(src, sl, top, b - a, f"{where}: slice {k}")
        firsts.append(Occurrence(occ[0].settings, 0.0))
        for _ in range(rep):
            plan.extend(LayerCall(i, attn, mlp, heads, kv) for i in range(a, b))
            occurrences.extend(occ)
    if len(models) > 1:
        raise UserError(
            f"{where}: slices name different models ({', '.join(sorted(models))}); "
            "stitching layers of different models is not supported"
        )
    return MergekitPlan(plan, occurrences, firsts[0], firsts[-1], dtype, out_dtype, models, where)


def _slice_source(sl: Any, k: int, n_layers: int, where: str) -> tuple[Mapping[str, Any], int, int]:
    """A slice's one source (the slice itself in the short form) and its half-open layer range."""
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
    return src, a, b


MAX_PLAN_FILE = 1 << 20  # bytes; a plan file is a few lines
MAX_YAML_ALIASES = 100  # aliases expand multiplicatively ("billion laughs")
MAX_YAML_NODES = 100_000  # what the file may expand to; a plan is a few dozen values


def _check_yaml_aliases(text: str, path: Path) -> None:
    """Count what the YAML expands to from its events, before anything is built: more than
    ``MAX_YAML_ALIASES`` aliases, an alias of its own enclosing node, or more than
    ``MAX_YAML_NODES`` values after expansion (9 nested aliases can mean 10**9) are refused."""
    import yaml

    n = 0
    sizes: dict[str, int] = {}  # anchor -> expanded node count
    stack: list[list] = [[0, None]]  # open collections: [expanded size so far, anchor]
    try:
        for ev in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(ev, yaml.CollectionStartEvent):
                stack.append([1, ev.anchor])
                continue
            if isinstance(ev, yaml.CollectionEndEvent):
                size, anchor = stack.pop()
            elif isinstance(ev, yaml.ScalarEvent):
                size, anchor = 1, ev.anchor
            elif isinstance(ev, yaml.AliasEvent):
                n += 1
                if n > MAX_YAML_ALIASES:
                    raise UserError(f"plan file {path}: more than {MAX_YAML_ALIASES} YAML aliases; refusing "
                                    "to expand them")
                if ev.anchor not in sizes:
                    raise UserError(f"plan file {path}: YAML alias *{str(ev.anchor)[:40]} refers to a node that "
                                    "contains it (or to no anchor)")
                size, anchor = sizes[ev.anchor], None
            else:
                continue
            if anchor is not None:
                sizes[anchor] = size
            stack[-1][0] += size
            if stack[-1][0] > MAX_YAML_NODES:
                raise UserError(f"plan file {path}: its YAML aliases expand to more than {MAX_YAML_NODES:,} values; "
                                "refusing to expand them")
    except yaml.YAMLError:
        return  # the parser below reports it


def _read_structured(path: Path) -> Any:
    from lminspect.fsutil import read_text

    text = read_text(path, max_bytes=MAX_PLAN_FILE)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        _check_yaml_aliases(text, path)
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
        from lminspect.validate import cut

        raise UserError(f"cannot parse plan file {path}: {cut(msg)}") from None


_PLAN_FILE_SUFFIXES = (".yaml", ".yml", ".json", ".toml")


def _from_mapping(obj: Mapping[str, Any], n_layers: int, where: str) -> list[LayerCall]:
    if "slices" in obj or "models" in obj or "merge_method" in obj:
        return _plan_from_slices(obj, n_layers, where)
    for key in ("plan", "layers"):
        if key in obj:
            return parse_plan(obj[key], n_layers)
    raise UserError(f"{where}: expected a 'slices' or 'models' list (mergekit) or a 'plan' entry")


def load_plan_file(path: str | Path, n_layers: int) -> list[LayerCall]:
    """One plan from a YAML/JSON/TOML file (mergekit slices, or ``plan: "0-23,27-29"``)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
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
    from lminspect.limits import MAX_LAYERS, check_count

    check_count("model layers", n_layers, MAX_LAYERS)
    if spec is None:
        return full_plan(n_layers)
    if isinstance(spec, MergekitPlan):  # already read, with its mergekit settings
        for k, x in enumerate(spec):
            _check_index(x.index, n_layers, str(x.index), k + 1)
        return spec
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
        if s.lower().endswith(_PLAN_FILE_SUFFIXES) or ("/" in s and (Path(s).exists() or Path(s).is_symlink())):
            return load_plan_file(s, n_layers)
        try:
            return _parse_string(s, n_layers)
        except UserError:
            near = nearest_presets(s)
            if not near:
                raise
            raise UserError(f"plan '{s}' is neither a preset name nor a layer spec",
                            hint=f"did you mean {' or '.join(repr(n) for n in near)}? "
                                 "(see lminspect stitch presets)") from None
    raise UserError(f"cannot use {type(spec).__name__} as a layer plan")


def nearest_presets(word: str, n: int = 3) -> list[str]:
    """Preset names close to ``word`` (a misspelt preset), best first; [] for layer specs."""
    import difflib
    import re

    if not re.fullmatch(r"[A-Za-z0-9_-]+", word) or not ("_" in word or word[0].isalpha()):
        return []  # '0-23,27-29', '15r3', 'skip:4' are layer specs, not names
    return difflib.get_close_matches(word, list(PRESETS), n=n, cutoff=0.6)



def sweep_plans(plans: str | Path | Mapping[str, Any] | None, inline: list[str] | None,
                n_layers: int) -> dict[str, list[LayerCall]]:
    """A sweep's named plans: ``plans`` as ``load_plans`` takes it, plus inline ``NAME=SPEC`` plans
    (``stitch sweep --plan``); inline plans alone replace the presets."""
    named = {} if inline and plans == "presets" else load_plans(plans, n_layers)
    for opt in inline or []:
        name, eq, spec = opt.partition("=")
        if not eq or not name.strip() or not spec.strip():
            raise UserError(f"--plan {opt!r}: expected NAME=SPEC, e.g. --plan 'cut=0-23,27-29'", option="--plan")
        if name.strip() in named:
            raise UserError(f"--plan {opt!r}: the name {name.strip()!r} is already taken by another plan; give each "
                            "plan its own name", option="--plan")
        try:
            named[name.strip()] = parse_plan(spec.strip(), n_layers)
        except UserError as exc:
            raise UserError(f"--plan {name.strip()}: {exc.message}", option="--plan") from None
    return named


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
                near = nearest_presets(unknown[0])
                raise UserError(
                    f"unknown preset '{unknown[0]}' in --plans; give 'presets', preset names "
                    "separated by commas, or a TOML/YAML/JSON file",
                    hint=f"did you mean {' or '.join(repr(n) for n in near)}?" if near else None,
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


def check_plan_early(spec: Any, option: str = "--plan", *, sweep: Any = None) -> None:
    """A command's plan checked before torch and the model load (this module needs neither): an
    empty plan, a grammar typo, an unknown preset or a bad plan file is reported at once, not
    after seconds of loading. Whether the layers exist waits for the model's depth
    (:func:`parse_plan`), so the check parses as if the model had ``MAX_LAYERS`` blocks.
    ``sweep``: the ``--plans`` of ``stitch sweep``, with ``spec`` its inline ``NAME=SPEC`` list."""
    import contextlib
    import io

    from lminspect.limits import MAX_LAYERS
    from lminspect.validate import plan_given

    if isinstance(spec, str):
        plan_given(spec, option)
    # quiet: a plan file's warnings (an ignored mergekit key) come once, from the real parse
    with contextlib.redirect_stderr(io.StringIO()):
        if sweep is not None:
            sweep_plans(sweep, spec, MAX_LAYERS)
        elif spec is not None:
            parse_plan(spec, MAX_LAYERS)
