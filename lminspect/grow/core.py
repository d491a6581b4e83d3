"""Function-preserving growth of llama / gpt2 models (seed 003, "building babel").

:func:`grow_model` returns a bigger model that computes *the same logits* as the old one on
every input over the old vocabulary (up to float rounding), plus a :class:`ParamMap` telling
which element of every new tensor came from which element of an old one (used to carry
optimizer state across a growth event while training).

How each kind of growth stays exact (D = residual width, ' = after growth):

- **depth**: inserted blocks have ``attn.o`` and ``mlp.down`` (weights and biases) zero, so
  the block adds nothing to the residual: it is the identity until trained.
- **ffn**: new hidden units have random ``up``/``gate`` rows and *zero* ``down`` columns.
- **heads** (head_dim fixed): new q/k/v rows are random, the matching ``attn.o`` columns are
  zero. With grouped-query attention an old query head keeps its kv head: old head ``i`` of
  group ``g`` moves to slot ``g * rep' + i % rep`` (q rows and o columns move together, so the
  sum over heads is unchanged).
- **width** (D -> D'): everything that *reads* the residual gets random new input columns;
  everything that *writes* it (token/position embeddings, ``attn.o``, ``mlp.down``) is
  extended so the new residual dimensions hold a known function of the old ones, chosen so
  the norms still compute the same thing on the old dimensions:

  * RMSNorm (llama): the new dimensions stay **zero**. The mean square over D' is then
    ``ms * D/D'``; with ``eps' = eps * D/D'`` and weights scaled by ``sqrt(D/D')``,
    ``w' * x * rsqrt(ms*D/D' + eps*D/D') == w * x * rsqrt(ms + eps)`` exactly.
  * LayerNorm (gpt2): zero padding would shift the mean, so every new dimension carries the
    **mean of the old dimensions** instead (new output rows of every writer are the mean of
    its old rows; linearity keeps the invariant through the whole residual sum). Then the
    mean over D' equals the old mean, the variance is ``var * D/D'``, and with the same
    ``eps`` / weight scaling the normalised old dimensions are unchanged; new dimensions
    normalise to ``0`` and get bias 0, so readers see exactly the old activations.
- **vocab** (V -> V'): new embedding/head rows are the mean of the old rows (``vocab_init=
  "mean"``), so a new token's logit is the *mean* of the old logits: never above the max
  (argmax unchanged, "cannot win"), and the extra softmax mass is at most ``(V'-V)/V`` of the
  total (Jensen: ``exp(mean) <= mean(exp)``); untrained tokens are pushed down within a few
  steps. Neither llama nor gpt2 has a head bias, so a constant "very negative" logit is not
  expressible; ``vocab_init="zero"`` gives logit 0 instead. Old-token logits are unchanged
  either way (tied heads included: the tied matrix gets the same new rows).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lminspect.errors import UserError

if TYPE_CHECKING:  # annotations only
    from lminspect.models.common import LM

GROWABLE = ("llama", "gpt2")


@dataclass
class GrowSpec:
    """What to grow. ``None`` = keep. ``layers`` is how many blocks to insert at ``at``."""

    layers: int = 0
    at: int | None = None  # insert before this old layer index (None: at the end)
    width: int | None = None
    ffn: int | None = None
    heads: int | None = None
    kv_heads: int | None = None  # llama only; default keeps the q/kv ratio when it can
    vocab: int | None = None
    vocab_init: str = "mean"  # "mean" | "zero"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GrowSpec:
        known = set(cls.__dataclass_fields__)
        bad = sorted(set(d) - known - {"tokens", "at_tokens", "lr_scale", "old_lr_scale"})
        if bad:
            raise UserError(f"growth event: unknown key(s) {', '.join(bad)} (known: {', '.join(sorted(known))})")
        return cls(**{k: v for k, v in d.items() if k in known})

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, 0) or k == "layers"}


@dataclass
class ParamMap:
    """For every new parameter: the old parameter it extends (or None) and, per dimension, a
    LongTensor giving the old index of each new index (-1: new element)."""

    sources: dict[str, tuple[str | None, list[Any]]] = field(default_factory=dict)

    def carry(self, name: str, new_like: Any, old: Any) -> Any:
        """``old`` (an optimizer-state tensor shaped like the old parameter) laid into zeros
        shaped like the new one; scalars (e.g. Adam's ``step``) are copied."""
        import torch

        src, maps = self.sources.get(name, (None, []))
        if old is not None and old.dim() == 0:
            return old.clone()
        out = torch.zeros_like(new_like)
        if src is None or old is None or old.dim() != new_like.dim():
            return out
        _copy_mapped(out, old.to(out.device), maps)
        return out


def _copy_mapped(dst: Any, src: Any, maps: list[Any]) -> None:
    """``dst[i, j] = src[map0[i], map1[j]]`` where both maps are >= 0."""
    import torch

    if dst.dim() == 0:
        dst.copy_(src)
        return
    new_idx, old_idx = [], []
    for m in maps:
        keep = torch.nonzero(m >= 0).flatten()
        new_idx.append(keep)
        old_idx.append(m[keep])
    if any(len(k) == 0 for k in new_idx):
        return
    if dst.dim() == 1:
        dst[new_idx[0]] = src[old_idx[0]].to(dst.dtype)
    else:
        dst[new_idx[0][:, None], new_idx[1][None, :]] = src[old_idx[0][:, None], old_idx[1][None, :]].to(dst.dtype)


def _check_growable(model: LM) -> str:
    arch = getattr(model, "arch", "unknown")
    if arch not in GROWABLE:
        raise UserError(f"cannot grow a {arch!r} model (growth supports {', '.join(GROWABLE)})")
    for block in model.layers:
        if getattr(block.attn, "v_norm", None) is not None:
            raise UserError("cannot grow a model with value norms (value_norm experiment): unknown layout")
    return arch


def _new_config(model: LM, spec: GrowSpec) -> tuple[Any, int, int, int]:
    """The grown config and (H, KV, head_dim) of the old model; validates ``spec``."""
    c = model.config
    arch = _check_growable(model)
    D, L, F, V = c.dim, c.n_layer, c.ffn_dim, c.vocab_size
    H = c.n_head
    KV = getattr(c, "n_kv_head", H)
    hd = c.head_dim
    D2 = D if spec.width is None else int(spec.width)
    F2 = F if spec.ffn is None else int(spec.ffn)
    V2 = V if spec.vocab is None else int(spec.vocab)
    n_new = int(spec.layers or 0)
    for what, old, new in (("width", D, D2), ("ffn", F, F2), ("vocab", V, V2)):
        if new < old:
            raise UserError(f"cannot shrink {what} from {old} to {new} (growth only adds)")
    if n_new < 0:
        raise UserError(f"cannot remove layers ({n_new}); growth only adds")
    at = L if spec.at is None else int(spec.at)
    if not 0 <= at <= L:
        raise UserError(f"--at {at}: insertion position must be between 0 and {L} (the model has {L} layers)")
    if spec.heads is not None:
        H2 = int(spec.heads)
    elif (H * D2) % D == 0 and (arch == "gpt2" or D2 != D):
        H2 = H * D2 // D  # grow heads with the width, head_dim fixed (as building babel)
    else:
        H2 = H
    if H2 < H:
        raise UserError(f"cannot shrink heads from {H} to {H2}")
    if spec.vocab_init not in ("mean", "zero"):
        raise UserError(f"vocab_init {spec.vocab_init!r}: choose mean or zero")
    if arch == "gpt2":
        if H2 <= 0 or D2 % H2 or D2 // H2 != hd:
            raise UserError(f"gpt2: {H2} heads do not divide width {D2} into heads of the fixed size {hd} "
                            f"(use --heads {D2 // hd if D2 % hd == 0 else '?'}, width a multiple of {hd})")
        new = replace(c, dim=D2, n_layer=L + n_new, n_head=H2, ffn_dim=F2, vocab_size=V2,
                      norm_eps=c.norm_eps * D / D2)
        return new, H, KV, hd
    if spec.kv_heads is not None:
        KV2 = int(spec.kv_heads)
    elif (H2 * KV) % H == 0:
        KV2 = H2 * KV // H  # keep the grouping ratio
    else:
        KV2 = KV
    if KV2 < KV:
        raise UserError(f"cannot shrink kv heads from {KV} to {KV2}")
    if H2 % KV2 or H2 // KV2 < H // KV:
        raise UserError(f"llama: {H2} heads cannot be grouped over {KV2} kv heads keeping each old head's "
                        f"kv head (need heads a multiple of kv heads, at least {H // KV} per group)")
    new = replace(c, dim=D2, n_layer=L + n_new, n_head=H2, n_kv_head=KV2, ffn_dim=F2, vocab_size=V2,
                  norm_eps=c.norm_eps * D / D2)
    return new, H, KV, hd


def grow_model(model: LM, spec: GrowSpec | dict[str, Any], *, seed: int = 0) -> tuple[Any, ParamMap]:
    """A grown copy of ``model`` (same logits on the old vocabulary) and its :class:`ParamMap`."""
    import torch

    from lminspect.models import build_model

    if isinstance(spec, dict):
        spec = GrowSpec.from_dict(spec)
    model = getattr(model, "module", model)
    arch = _check_growable(model)
    c = model.config
    new_cfg, H, KV, hd = _new_config(model, spec)
    D, D2 = c.dim, new_cfg.dim
    L = c.n_layer
    at = L if spec.at is None else int(spec.at)
    n_new = int(spec.layers or 0)
    H2 = new_cfg.n_head
    KV2 = getattr(new_cfg, "n_kv_head", H2)
    rep, rep2 = H // KV, H2 // KV2
    mean_mode = arch == "gpt2"  # LayerNorm: new dims carry the mean of the old ones
    dev, dtype = model.device, model.dtype

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = build_model(new_cfg)
    new = new.to(device=dev, dtype=dtype)
    old_sd = {k: v.detach() for k, v in model.state_dict().items()}

    def ar(n: int, n2: int) -> Any:
        m = torch.full((n2,), -1, dtype=torch.long)
        m[:n] = torch.arange(n)
        return m

    R = ar(D, D2)
    Fm = ar(c.ffn_dim, new_cfg.ffn_dim)
    Vm = ar(c.vocab_size, new_cfg.vocab_size)
    Q = torch.full((H2 * hd,), -1, dtype=torch.long)
    for i in range(H):
        slot = (i // rep) * rep2 + i % rep
        Q[slot * hd:(slot + 1) * hd] = torch.arange(i * hd, (i + 1) * hd)
    KVm = ar(KV * hd, KV2 * hd)
    layer_src = [*range(at), *([None] * n_new), *range(at, L)]

    def maps_for(suffix: str) -> list[Any]:
        kind = suffix.rsplit(".", 1)[0]
        is_w = suffix.endswith("weight")
        if kind in ("attn_norm", "mlp_norm"):
            return [R]
        if kind == "attn.q":
            return [Q, R] if is_w else [Q]
        if kind in ("attn.k", "attn.v"):
            return [KVm, R] if is_w else [KVm]
        if kind == "attn.o":
            return [R, Q] if is_w else [R]
        if kind in ("mlp.gate", "mlp.up"):
            return [Fm, R] if is_w else [Fm]
        if kind == "mlp.down":
            return [R, Fm] if is_w else [R]
        raise UserError(f"cannot grow parameter {suffix!r}: unknown layout")

    pmap = ParamMap()
    state: dict[str, Any] = {}
    scale = math.sqrt(D / D2)
    with torch.no_grad():
        for name, t in new.state_dict().items():
            t = t.detach().clone()
            if name.startswith("layers."):
                _, idx, suffix = name.split(".", 2)
                src_layer = layer_src[int(idx)]
                if src_layer is None:  # inserted block: identity on the residual
                    if suffix.startswith(("attn.o.", "mlp.down.")):
                        t.zero_()
                    elif suffix.startswith(("attn_norm.", "mlp_norm.")):
                        t.fill_(1.0 if suffix.endswith("weight") else 0.0)
                    pmap.sources[name] = (None, [])
                    state[name] = t
                    continue
                src = f"layers.{src_layer}.{suffix}"
                maps = maps_for(suffix)
            elif name == "embed.tokens.weight" or name == "head.weight":
                src, maps = name, [Vm, R]
            elif name == "embed.positions.weight":
                src, maps = name, [torch.arange(t.shape[0]), R]
            elif name.startswith("norm."):
                src, maps = name, [R]
            else:
                raise UserError(f"cannot grow parameter {name!r}: unknown layout")
            _copy_mapped(t, old_sd[src], maps)
            kind = name.rsplit(".", 1)[0]
            short = kind.split(".", 2)[-1] if kind.startswith("layers.") else kind
            new_rows = maps[0] < 0
            if short in ("attn_norm", "mlp_norm", "norm"):
                if name.endswith("weight"):
                    if D2 != D:
                        t.mul_(scale)
                        t[new_rows] = scale
                else:
                    t[new_rows] = 0.0
            elif short in ("attn.o", "mlp.down"):
                if t.dim() == 2:
                    t[:, maps[1] < 0] = 0.0  # new heads / hidden units write nothing
                _extend_rows(t, new_rows, mean_mode)
            elif name in ("embed.tokens.weight", "embed.positions.weight"):
                _extend_cols(t, maps[1] < 0, mean_mode)
            if name in ("embed.tokens.weight", "head.weight") and bool((Vm < 0).any()):
                vnew = Vm < 0
                t[vnew] = t[~vnew].mean(0) if spec.vocab_init == "mean" else 0.0
            pmap.sources[name] = (src, maps)
            state[name] = t
    new.load_state_dict(state)
    new.train(model.training)
    for attr in ("source",):
        if hasattr(model, attr):
            setattr(new, attr, getattr(model, attr))
    return new, pmap


def _extend_rows(t: Any, new_rows: Any, mean_mode: bool) -> None:
    """New residual outputs of a writer: zero (RMSNorm models) or the mean of the old rows."""
    if not bool(new_rows.any()):
        return
    t[new_rows] = t[~new_rows].mean(0) if mean_mode else 0.0


def _extend_cols(t: Any, new_cols: Any, mean_mode: bool) -> None:
    """New residual dims of an embedding table: zero or each row's mean over the old dims."""
    if not bool(new_cols.any()):
        return
    t[:, new_cols] = t[:, ~new_cols].mean(1, keepdim=True) if mean_mode else 0.0


def parse_layers(value: str | int | None, n_layer: int) -> int:
    """``+N`` = insert N blocks; ``N`` = grow to N blocks in total."""
    if value is None or value == "":
        return 0
    s = str(value).strip()
    try:
        n = int(s)
    except ValueError as e:
        raise UserError(f"--layers {value!r}: expected +N (add N) or N (total)") from e
    if s.startswith("+"):
        return n
    if n < n_layer:
        raise UserError(f"cannot shrink layers from {n_layer} to {n} (growth only adds)")
    return n - n_layer
