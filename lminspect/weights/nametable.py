"""One format's tensor names <-> canonical names, as data (the tables live in weights/families.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class NameTable:
    """One format's module names <-> canonical module names, as data, read in both directions.

    Reading (:meth:`to_canonical`) builds the weight store's canonical view; writing
    (:meth:`to_hf`) is HF export and GGUF conversion. A tensor name is a module name plus
    ``.weight`` / ``.bias``; ``{N}`` in ``block`` stands for the layer index.
    """

    top: dict[str, str]  # module outside the blocks -> canonical module
    block: str  # prefix of block N's modules
    layer: dict[str, str]  # module inside a block -> canonical module
    read_aliases: dict[str, str] = field(default_factory=dict)  # in-block spellings read, never written
    optional_prefix: str = ""  # omitted by some checkpoints when reading (GPT2Model's bare "wte")
    conv1d: frozenset[str] = frozenset()  # canonical in-block modules stored [in, out] (GPT-2 Conv1D)
    fused_qkv: str | None = None  # in-block module holding q, k and v (read as canonical "attn.qkv")
    fused_gate_up: str | None = None  # in-block module holding gate then up (Phi-3; read as "mlp.gate_up")
    nested: dict[str, str] = field(default_factory=dict)  # in-block module -> canonical, submodules kept

    _block_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        head, _, tail = self.block.partition("{N}")
        object.__setattr__(self, "_block_re", re.compile(re.escape(head) + r"(\d+)" + re.escape(tail) + r"(.+)"))

    def to_canonical(self, name: str) -> tuple[str, str] | None:
        """``(canonical module, kind)`` of a stored tensor name, or None when it has no canonical meaning.

        ``("layers.3.attn.o", "weight")``; the fused q/k/v module comes back as ``layers.N.attn.qkv``.
        """
        module, _, kind = name.rpartition(".")
        if kind not in ("weight", "bias"):
            return None
        tries = [module]
        if self.optional_prefix and not module.startswith(self.optional_prefix):
            tries.append(self.optional_prefix + module)
        for m in tries:
            if m in self.top:
                return self.top[m], kind
            hit = self._block_re.fullmatch(m)
            if hit:
                i, sub = hit.groups()
                if sub == self.fused_qkv:
                    return f"layers.{i}.attn.qkv", kind
                if sub == self.fused_gate_up:
                    return f"layers.{i}.mlp.gate_up", kind
                cmod = self.layer.get(sub) or self.read_aliases.get(sub)
                if cmod:
                    return f"layers.{i}.{cmod}", kind
                for hf, cm in self.nested.items():
                    if sub.startswith(hf + "."):
                        return f"layers.{i}.{cm}{sub[len(hf):]}", kind
        return None

    def to_hf(self, cname: str) -> str:
        """Canonical tensor name -> this format's name; ``KeyError`` when the format has no such module."""
        module, _, kind = cname.rpartition(".")
        for hf, cmod in self.top.items():
            if cmod == module:
                return f"{hf}.{kind}"
        m = re.fullmatch(r"layers\.(\d+)\.(.+)", module)
        if m:
            for hf, cmod in self.layer.items():
                if cmod == m[2]:
                    return f"{self.block.format(N=m[1])}{hf}.{kind}"
            for hf, cmod in self.nested.items():
                if m[2].startswith(cmod + "."):
                    return f"{self.block.format(N=m[1])}{hf}{m[2][len(cmod):]}.{kind}"
        raise KeyError(cname)


