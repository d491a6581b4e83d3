"""GGUF reader: our own header/metadata parser on a memory map, gguf's dequantizers.

Why not ``gguf.GGUFReader``: it builds a numpy object per array item, so the 49k-token
vocabulary of SmolLM2 costs ~1.5 s to open. Here the metadata walk only records where
big string arrays live and decodes them when someone asks (the tokenizer); opening a
GGUF costs a few tens of ms. Tensor data are ``np.memmap`` views; F32/F16 are zero copy,
quantized types are dequantized per tensor on access with ``gguf.quants.dequantize``.

Shapes: GGUF stores dims in ggml order (fastest first); we report numpy order.
Llama ``attn_q``/``attn_k`` stay as stored under their GGUF names; the canonical names
(see naming.py) un-permute them to HF's half-split rotary layout.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lminspect.errors import FormatError
from lminspect.weights.families import gguf_family
from lminspect.weights.store import RawEntry, TensorStore

# GGUF value types -> struct format (scalars)
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NP = {0: "u1", 1: "i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
STRING, ARRAY = 8, 9


class _Truncated(Exception):
    pass


class StrArray:
    """A GGUF string array decoded only when needed (vocabularies are big)."""

    def __init__(self, buf: mmap.mmap, offset: int, count: int) -> None:
        self._buf, self._off, self.count = buf, offset, count
        self._val: list[str] | None = None

    def decode(self) -> list[str]:
        if self._val is None:
            buf, pos, out = self._buf, self._off, []
            unpack = struct.unpack_from
            for _ in range(self.count):
                (n,) = unpack("<Q", buf, pos)
                pos += 8
                out.append(buf[pos : pos + n].decode("utf-8", errors="replace"))
                pos += n
            self._val = out
        return self._val

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"<{self.count} strings>"


# ggml type id -> (name, values per block, bytes per block), as gguf-py's GGML_QUANT_SIZES: parsing
# a header needs only these (importing gguf-py costs ~0.1 s of a start); rarer types ask gguf-py
_GGML_TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
               7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84),
               11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210),
               15: ("Q8_K", 256, 292), 24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8),
               28: ("F64", 1, 8), 30: ("BF16", 1, 2)}
_ggml_type = _GGML_TYPES.get


class GGUFFile:
    """Parsed header, metadata and tensor table of one GGUF file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                self.size = os.fstat(f.fileno()).st_size
                if self.size < 24:
                    raise FormatError(f"{self.path}: not a GGUF file: only {self.size} bytes")
                self._buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise FormatError(f"{self.path}: cannot read: {e.strerror or e}") from None
        try:
            self._parse()
        except (_Truncated, struct.error):
            raise FormatError(f"{self.path}: truncated GGUF header/metadata ({self.size} bytes)") from None
        except UnicodeDecodeError:
            raise FormatError(f"{self.path}: GGUF metadata has a key that is not UTF-8") from None
        self._mm: np.memmap | None = None

    def _fail(self, msg: str) -> FormatError:
        return FormatError(f"{self.path}: not a valid GGUF file: {msg}")

    # -------------------------------------------------------------- parsing
    def _need(self, pos: int, n: int) -> None:
        if pos + n > self.size:
            raise _Truncated

    def _str(self, pos: int) -> tuple[str, int]:
        self._need(pos, 8)
        (n,) = struct.unpack_from("<Q", self._buf, pos)
        pos += 8
        self._need(pos, n)
        return self._buf[pos : pos + n].decode("utf-8"), pos + n

    def _value(self, vtype: int, pos: int) -> tuple[Any, int]:
        if vtype in _SCALAR:
            fmt = _SCALAR[vtype]
            n = struct.calcsize(fmt)
            self._need(pos, n)
            return struct.unpack_from(fmt, self._buf, pos)[0], pos + n
        if vtype == STRING:
            self._need(pos, 8)
            (n,) = struct.unpack_from("<Q", self._buf, pos)
            self._need(pos + 8, n)
            return self._buf[pos + 8 : pos + 8 + n].decode("utf-8", errors="replace"), pos + 8 + n
        if vtype == ARRAY:
            self._need(pos, 12)
            itype, count = struct.unpack_from("<IQ", self._buf, pos)
            pos += 12
            if count > self.size:
                raise self._fail(f"array of {count} items is longer than the file")
            if itype in _NP:
                dt = np.dtype(_NP[itype])
                self._need(pos, count * dt.itemsize)
                arr = np.frombuffer(self._buf, dtype=dt, count=count, offset=pos)
                return arr, pos + count * dt.itemsize
            if itype == STRING:
                start = pos
                unpack = struct.unpack_from
                size = self.size
                for _ in range(count):
                    if pos + 8 > size:
                        raise _Truncated
                    pos += 8 + unpack("<Q", self._buf, pos)[0]
                if pos > size:
                    raise _Truncated
                sa = StrArray(self._buf, start, count)
                return (sa.decode() if count <= 64 else sa), pos
            if itype == ARRAY:
                out = []
                for _ in range(count):
                    v, pos = self._value(ARRAY, pos)
                    out.append(v)
                return out, pos
            raise self._fail(f"unknown array item type {itype}")
        raise self._fail(f"unknown metadata value type {vtype}")

    def _parse(self) -> None:
        buf = self._buf
        if buf[:4] != b"GGUF":
            raise self._fail(f"bad magic {bytes(buf[:4])!r} (expected b'GGUF')")
        (self.version,) = struct.unpack_from("<I", buf, 4)
        if self.version not in (2, 3):
            raise self._fail(f"unsupported GGUF version {self.version} (supported: 2, 3)")
        n_tensors, n_kv = struct.unpack_from("<QQ", buf, 8)
        if n_tensors > self.size or n_kv > self.size:
            raise self._fail(f"implausible counts ({n_tensors} tensors, {n_kv} metadata keys)")
        pos = 24
        self.kv: dict[str, Any] = {}
        for _ in range(n_kv):
            key, pos = self._str(pos)
            self._need(pos, 4)
            (vtype,) = struct.unpack_from("<I", buf, pos)
            val, pos = self._value(vtype, pos + 4)
            self.kv[key] = val
        raw: list[tuple[str, tuple[int, ...], int, int]] = []
        for _ in range(n_tensors):
            name, pos = self._str(pos)
            self._need(pos, 4)
            (nd,) = struct.unpack_from("<I", buf, pos)
            if nd > 8:
                raise self._fail(f"tensor {name!r}: {nd} dimensions")
            self._need(pos + 4, 8 * nd + 12)
            dims = struct.unpack_from(f"<{nd}Q", buf, pos + 4)
            ttype, off = struct.unpack_from("<IQ", buf, pos + 4 + 8 * nd)
            pos += 4 + 8 * nd + 12
            raw.append((name, tuple(int(d) for d in dims), ttype, off))
        align = int(self.kv.get("general.alignment", 32) or 32)
        self.data_start = pos + (-pos % align)
        self.tensors: dict[str, tuple[str, tuple[int, ...], int, int, Any]] = {}
        for name, dims, ttype, off in raw:
            tname, block, tsize = _ggml_type(ttype) or self._rare_type(name, ttype)
            numel = 1
            for d in dims:
                numel *= d
            if dims and dims[0] % block:
                raise self._fail(f"tensor {name!r}: row of {dims[0]} is not a multiple of {tname} blocks")
            nbytes = numel // block * tsize
            start = self.data_start + off
            if start + nbytes > self.size:
                raise self._fail(
                    f"tensor {name!r} ends at byte {start + nbytes} past the end of the file "
                    f"({self.size} bytes; truncated?)"
                )
            shape = tuple(reversed(dims))  # numpy order
            self.tensors[name] = (tname, shape, start, nbytes, ttype)

    def _rare_type(self, name: str, ttype: int) -> tuple[str, int, int]:
        """(name, block, bytes) of a ggml type the table above leaves to gguf-py (IQ*, TQ*, ...)."""
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        try:
            qt = GGMLQuantizationType(ttype)
        except ValueError:
            raise self._fail(f"tensor {name!r}: unknown ggml type {ttype}") from None
        return (qt.name, *GGML_QUANT_SIZES[qt])

    # -------------------------------------------------------------- access
    def get_kv(self, key: str, default: Any = None) -> Any:
        v = self.kv.get(key, default)
        return v.decode() if isinstance(v, StrArray) else v

    def _map(self) -> np.memmap:
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="c")
        return self._mm

    def offset_of(self, a: np.ndarray) -> int | None:
        """The file offset of the first byte of ``a`` when it is a view of this file's map (as
        ``raw`` returns), else None: where a tensor's bytes came from, for caches keyed by it."""
        if self._mm is None:
            return None
        off = a.__array_interface__["data"][0] - self._mm.__array_interface__["data"][0]
        return off if 0 <= off and off + a.nbytes <= self.size else None

    def raw(self, name: str) -> np.ndarray:
        """Stored bytes: typed view for F32/F16/ints, ``[..., row_bytes]`` uint8 for quantized."""
        tname, shape, start, nbytes, qt = self.tensors[name]
        b = self._map()[start : start + nbytes]
        np_types = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I8": "i1", "I16": "<i2", "I32": "<i4",
                    "I64": "<i8"}
        if tname in np_types:
            return b.view(np_types[tname]).reshape(shape)
        if tname == "BF16":
            return b.view("<u2").reshape(shape)
        rows = shape[:-1] if shape else ()
        return b.reshape(*rows, -1)

    def get(self, name: str) -> np.ndarray:
        """Tensor as numpy: memmap view for F32/F16/ints, float32 for BF16 and quantized types."""
        tname, shape, _, _, qt = self.tensors[name]
        a = self.raw(name)
        if tname in ("F32", "F16", "F64", "I8", "I16", "I32", "I64"):
            return a
        if tname == "BF16":
            from lminspect.weights.safetensors_format import bf16_to_f32

            return bf16_to_f32(a)
        from gguf.constants import GGMLQuantizationType
        from gguf.quants import dequantize

        try:
            with np.errstate(all="ignore"):  # overflow in a mislabelled block: said once below, not by numpy
                out = dequantize(a, GGMLQuantizationType(qt)).reshape(shape)
        except NotImplementedError:
            raise FormatError(f"{self.path}: tensor {name!r}: cannot dequantize {tname}") from None
        bad = out.size - int(np.count_nonzero(np.isfinite(out)))
        if bad and (str(self.path), name) not in _WARNED:
            _WARNED.add((str(self.path), name))
            import sys

            print(f"lminspect: warning: {self.path}: tensor {name!r} ({tname}) has {bad:,} NaN/inf values of "
                  f"{out.size:,} once dequantized (broken block scales?); what is computed with it is not "
                  "meaningful", file=sys.stderr)
        return out


_WARNED: set[tuple[str, str]] = set()  # (file, tensor) already said to hold NaN/inf


# ------------------------------------------------------------------ metadata -> HF


def hf_config(g: GGUFFile) -> dict[str, Any]:
    """An HF-style config dict synthesised from GGUF metadata (llama family)."""
    arch = g.get_kv("general.architecture", "llama")
    k = lambda s, d=None: g.get_kv(f"{arch}.{s}", d)  # noqa: E731
    n_embd = k("embedding_length")
    n_head = k("attention.head_count")
    tokens = g.kv.get("tokenizer.ggml.tokens")
    vocab = k("vocab_size") or (len(tokens) if tokens is not None else None)
    if vocab is None and "token_embd.weight" in g.tensors:
        vocab = g.tensors["token_embd.weight"][1][0]
    spec = gguf_family(arch)
    cfg: dict[str, Any] = {
        "architectures": list(spec.architectures[:1]) if spec and spec.architectures else [arch],
        "model_type": spec.model_types[0] if spec else arch,
        "hidden_size": n_embd,
        "intermediate_size": k("feed_forward_length"),
        "num_hidden_layers": k("block_count"),
        "num_attention_heads": n_head,
        "num_key_value_heads": k("attention.head_count_kv", n_head),
        "rms_norm_eps": float(k("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(k("rope.freq_base", 10000.0)),
        # transformers 5 reads rope settings from here (and still accepts rope_theta)
        "rope_parameters": {"rope_type": "default", "rope_theta": float(k("rope.freq_base", 10000.0))},
        "vocab_size": int(vocab) if vocab is not None else None,
        "max_position_embeddings": k("context_length", 2048),
        "tie_word_embeddings": "output.weight" not in g.tensors,
        "hidden_act": "silu",
        "attention_bias": "blk.0.attn_q.bias" in g.tensors,
        "mlp_bias": False,
        "torch_dtype": "float32",
    }
    _untranslated(g, arch, k, cfg)
    rope_dim = k("rope.dimension_count")
    if arch == "stablelm":
        _stablelm_config(g, k, cfg)
    elif arch == "phi3":
        _phi3_config(g, k, cfg)
    elif rope_dim and n_embd and n_head and rope_dim != n_embd // n_head:
        cfg["head_dim"] = rope_dim
    for key, hf in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                    ("padding_token_id", "pad_token_id")):
        v = g.get_kv(f"tokenizer.ggml.{key}")
        if v is not None:
            cfg[hf] = int(v)
    name = g.get_kv("general.name")
    if name:
        cfg["_name_or_path"] = name
    return cfg


def _rotary_factor(k: Callable[..., Any], cfg: dict[str, Any]) -> float:
    """The ``partial_rotary_factor`` whose ``int(head_dim * f)`` is the GGUF's RoPE width."""
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    dim = int(k("rope.dimension_count") or head_dim)
    f = dim / head_dim
    return f if int(head_dim * f) == dim else (dim + 0.5) / head_dim


def _phi3_config(g: GGUFFile, k: Callable[..., Any], cfg: dict[str, Any]) -> None:
    """Phi-3's keys: partial rotary from the RoPE width, the window (0: none; read under its HF name),
    and llama.cpp's long-context RoPE factor tables (refused: the engine has no longrope)."""
    for key in ("mlp_bias", "attention_bias"):
        cfg.pop(key)
    factor = _rotary_factor(k, cfg)
    cfg["partial_rotary_factor"] = factor
    cfg["rope_parameters"]["partial_rotary_factor"] = factor
    cfg.pop(f"gguf:{g.get_kv('general.architecture')}.attention.sliding_window", None)
    cfg["sliding_window"] = int(k("attention.sliding_window", 0)) or None
    if "rope_factors_long.weight" in g.tensors or "rope_factors_short.weight" in g.tensors:
        cfg["gguf:rope_factors_long_short"] = True


def _stablelm_config(g: GGUFFile, k: Callable[..., Any], cfg: dict[str, Any]) -> None:
    """StableLM's keys (LayerNorm, partial rotary, parallel residual, q/k norms) in place of Llama's.
    llama.cpp's converter writes no RoPE base for StableLM: its default (10000) is what both run."""
    for key in ("rms_norm_eps", "mlp_bias", "attention_bias"):
        cfg.pop(key)
    theta = cfg["rope_theta"]
    factor = _rotary_factor(k, cfg)
    cfg.update(layer_norm_eps=float(k("attention.layer_norm_epsilon", 1e-5)), partial_rotary_factor=factor,
               rope_parameters={"rope_type": "default", "rope_theta": theta, "partial_rotary_factor": factor},
               use_parallel_residual=bool(k("use_parallel_residual", False)),
               use_qkv_bias="blk.0.attn_q.bias" in g.tensors, qk_layernorm="blk.0.attn_q_norm.weight" in g.tensors)


# GGUF keys with an HF twin the engine computes (llama.cpp's granite names its multipliers "scale")
_GGUF_TO_HF = {"granite": {"embedding_scale": "embedding_multiplier", "residual_scale": "residual_multiplier",
                           "attention.scale": "attention_multiplier", "logit_scale": "logits_scaling"}}


def _untranslated(g: GGUFFile, arch: str, k: Callable[..., Any], cfg: dict[str, Any]) -> None:
    """GGUF settings beyond the plain Llama keys above: the ones the engine computes under their HF
    names, the others under a ``gguf:`` name, so the family check refuses them instead of the model
    running without them."""
    cfg["gguf:architecture"] = arch  # the family comes from here (weights/families.py)
    kind = k("rope.scaling.type")
    if kind not in (None, "none"):
        cfg["rope_scaling"] = {"rope_type": str(kind), "factor": k("rope.scaling.factor"),
                               "original_max_position_embeddings": k("rope.scaling.original_context_length")}
    if "rope_freqs.weight" in g.tensors:  # llama.cpp's form of Llama 3's rope scaling: a divisor per frequency
        if kind not in (None, "none"):
            cfg["gguf:rope_freqs"] = True  # both: refused
        else:
            factors = np.asarray(g.get("rope_freqs.weight"), dtype=np.float32).reshape(-1)
            cfg["rope_parameters"] = {"rope_type": "freq_factors", "rope_theta": cfg["rope_theta"],
                                      "factors": [float(x) for x in factors]}
    if k("expert_count"):
        cfg["num_local_experts"] = int(k("expert_count"))
    if arch == "smollm3":  # which layers skip RoPE is not in the file (llama.cpp assumes every 4th): refused
        cfg["gguf:no_rope_layers"] = "not recorded"
    hf = _GGUF_TO_HF.get(arch, {})
    for key in ("attention.sliding_window", "attn_logit_softcapping", "final_logit_softcapping",
                "embedding_scale", "residual_scale", "attention.scale", "logit_scale"):
        if k(key) is not None:
            cfg[hf.get(key, f"gguf:{arch}.{key}")] = float(k(key)) if key in hf else k(key)


# ------------------------------------------------------------------ tokenizer metadata -> HF

# tokenizer.ggml.token_type values (llama.cpp's llama_token_type) that become added tokens
_CONTROL, _USER_DEFINED = 3, 4
# tokenizer.ggml.model values we can build, and the architectures whose SentencePiece vocabularies
# transformers builds differently (Gemma's respelled spaces, Phi-3's normalizer): we do not guess those.
_SUPPORTED_MODELS = "gpt2 (byte-level BPE), llama (SentencePiece BPE)"
_SPM_OTHER_ARCHS = ("gemma", "gemma2", "gemma3", "phi3")


def tokenizer_json(g: GGUFFile) -> str | None:
    """Build a HF ``tokenizers`` tokenizer.json from GGUF metadata.

    The result is the tokenizer HF transformers builds when it loads the same GGUF
    (``AutoTokenizer.from_pretrained(dir, gguf_file=...)``), so ids match it.
    """
    model = g.get_kv("tokenizer.ggml.model")
    if model is None:
        return None
    arch = g.get_kv("general.architecture")
    if model == "gpt2":
        build = _byte_level_bpe
    elif model == "llama" and arch not in _SPM_OTHER_ARCHS:
        build = _sentencepiece_bpe
    else:
        what = f"tokenizer model {model!r}" + (f" of architecture {arch!r}" if model == "llama" else "")
        raise FormatError(f"{g.path}: {what} is not supported (supported: {_SUPPORTED_MODELS})")
    if g.kv.get("tokenizer.ggml.tokens") is None:
        raise FormatError(f"{g.path}: tokenizer model {model!r} but no tokenizer.ggml.tokens in the metadata")
    return build(g).to_str()


def _token_ids_of_type(g: GGUFFile, token_type: int) -> list[int]:
    ttypes = g.get_kv("tokenizer.ggml.token_type")
    return [] if ttypes is None else np.flatnonzero(np.asarray(ttypes) == token_type).tolist()


def _byte_level_bpe(g: GGUFFile) -> Any:
    """GPT-2 style byte-level BPE (SmolLM2, Llama 3...): the file lists its merges."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    tokens = g.get_kv("tokenizer.ggml.tokens")
    merges = g.get_kv("tokenizer.ggml.merges") or []
    vocab = {t: i for i, t in enumerate(tokens)}
    merge_pairs = [tuple(m.split(" ", 1)) for m in merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merge_pairs, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if g.get_kv("tokenizer.ggml.pre") in ("smollm", "starcoder", "refact", "codeshell"):
        # llama.cpp splits digits individually before the GPT-2 regex for these vocabularies
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    control = [tokens[i] for i in _token_ids_of_type(g, _CONTROL)]
    if control:
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    user = [tokens[i] for i in _token_ids_of_type(g, _USER_DEFINED)]
    if user:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in user])
    if g.get_kv("tokenizer.ggml.add_bos_token") and g.get_kv("tokenizer.ggml.bos_token_id") is not None:
        bos_id = int(g.get_kv("tokenizer.ggml.bos_token_id"))
        bos = tokens[bos_id]
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                          special_tokens=[(bos, bos_id)]),
        ])
    return tok


def _sentencepiece_bpe(g: GGUFFile) -> Any:
    """SentencePiece BPE (TinyLlama, Llama 2, OpenLLaMA...), built as transformers' LlamaTokenizer.

    Spaces are "▁" (Metaspace, one "▁" prepended to the text, never split on), characters
    missing from the vocabulary become their UTF-8 bytes ``<0xXX>`` (byte fallback), and
    the decoder undoes both and strips the prepended space.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokens = g.get_kv("tokenizer.ggml.tokens")
    merges = g.get_kv("tokenizer.ggml.merges")
    if merges is not None:
        pairs = [tuple(m.split(" ")) for m in merges]
    else:
        scores = g.get_kv("tokenizer.ggml.scores")
        if scores is None:
            raise FormatError(f"{g.path}: SentencePiece vocabulary has neither tokenizer.ggml.merges nor scores")
        pairs = _merges_from_scores(tokens, np.asarray(scores).tolist())
    vocab = {t: i for i, t in enumerate(tokens)}
    # no unk_token on the model, as transformers builds it: unknown characters go to byte tokens
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=True, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([
        decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(content=" ", left=1, right=0),
    ])
    special = _token_ids_of_type(g, _CONTROL) + [i for i in _named_special_ids(g).values() if i < len(tokens)]
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i in dict.fromkeys(special)])
    user = _token_ids_of_type(g, _USER_DEFINED)
    if user:
        tok.add_tokens([AddedToken(tokens[i], special=False, normalized=False) for i in user])
    tok.post_processor = _bos_eos_template(g, tokens)
    return tok


def _merges_from_scores(tokens: list[str], scores: list[float]) -> list[tuple[str, str]]:
    """The merges a SentencePiece BPE vocabulary implies (its GGUF usually lists none).

    Every split of a token into two vocabulary pieces is a merge ranked by the token's score
    (SentencePiece scores fall as merges were learned later). This is transformers'
    ``generate_merges`` step for step, ties included, so our ids equal HF's.
    """
    vocab = {t: i for i, t in enumerate(tokens)}
    found: list[tuple[str, str, float]] = []
    for piece, score in dict(zip(tokens, scores, strict=False)).items():
        splits = [(piece[:k], piece[k:], score) for k in range(1, len(piece))
                  if piece[:k] in vocab and piece[k:] in vocab]
        splits.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        found.extend(splits)
    found.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)  # stable: ties keep vocab order
    return [(left, right) for left, right, _ in found]


def _named_special_ids(g: GGUFFile) -> dict[str, int]:
    """bos/eos/unk/pad token ids the metadata names, keyed by HF's tokenizer_config names."""
    out = {}
    for key, hf in (("bos_token_id", "bos_token"), ("eos_token_id", "eos_token"),
                    ("unknown_token_id", "unk_token"), ("padding_token_id", "pad_token")):
        v = g.get_kv(f"tokenizer.ggml.{key}")
        if v is not None and int(v) >= 0:
            out[hf] = int(v)
    return out


def _add_bos_eos(g: GGUFFile) -> tuple[bool, bool]:
    """Whether encoding adds bos/eos; llama.cpp adds bos to a SentencePiece vocabulary that does not say."""
    add_bos = g.get_kv("tokenizer.ggml.add_bos_token")
    if add_bos is None:
        add_bos = g.get_kv("tokenizer.ggml.model") == "llama"
    return bool(add_bos), bool(g.get_kv("tokenizer.ggml.add_eos_token", False))


def _bos_eos_template(g: GGUFFile, tokens: list[str]) -> Any:
    """HF's ``update_post_processor`` template (``<s>:0 $A:0 </s>:0``) as the add_bos/eos flags say."""
    from tokenizers import processors

    named = {k: i for k, i in _named_special_ids(g).items() if i < len(tokens)}
    add_bos, add_eos = _add_bos_eos(g)
    front = [named["bos_token"]] if add_bos and "bos_token" in named else []
    back = [named["eos_token"]] if add_eos and "eos_token" in named else []

    def seq(name: str, type_id: int) -> str:
        return " ".join([f"{tokens[i]}:{type_id}" for i in front] + [f"${name}:{type_id}"]
                        + [f"{tokens[i]}:{type_id}" for i in back])

    return processors.TemplateProcessing(
        single=seq("A", 0), pair=f"{seq('A', 0)} {seq('B', 1)}",
        special_tokens=[(tokens[i], i) for i in dict.fromkeys(front + back)],
    )


def tokenizer_config(g: GGUFFile) -> dict[str, Any]:
    """tokenizer_config.json contents: special token strings and the chat template."""
    tokens = g.kv.get("tokenizer.ggml.tokens")
    out: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
    if tokens is not None:
        toks = tokens.decode() if isinstance(tokens, StrArray) else tokens
        for hf, i in _named_special_ids(g).items():
            if i < len(toks):
                out[hf] = toks[i]
    # transformers rebuilds the bos/eos template from these flags when it loads the directory
    if g.get_kv("tokenizer.ggml.add_bos_token") is not None or g.get_kv("tokenizer.ggml.model") == "llama":
        out["add_bos_token"], out["add_eos_token"] = _add_bos_eos(g)
    tmpl = g.get_kv("tokenizer.chat_template")
    if tmpl:
        out["chat_template"] = tmpl
    out["model_max_length"] = int(hf_config(g).get("max_position_embeddings") or 2048)
    return out


def metadata_dict(g: GGUFFile, *, max_items: int = 16) -> dict[str, Any]:
    """Metadata for display: big arrays summarised."""
    out: dict[str, Any] = {}
    for key, v in g.kv.items():
        if isinstance(v, StrArray) or (isinstance(v, np.ndarray) and v.size > max_items):
            out[key] = f"<array of {len(v)}>"
        elif isinstance(v, np.ndarray):
            out[key] = v.tolist()
        else:
            out[key] = v
    return out


def open_gguf(path: str | os.PathLike[str]) -> TensorStore:
    """Open a GGUF file as a lazy TensorStore (names are GGUF's own, canonical names mapped)."""
    g = GGUFFile(path)
    entries = {
        name: RawEntry(tname, shape, nbytes, g.path) for name, (tname, shape, _, nbytes, _) in g.tensors.items()
    }
    cfg = hf_config(g)
    spec = gguf_family(g.get_kv("general.architecture"))
    arch = spec.name if spec is not None else "unknown"
    store = TensorStore(
        path=g.path, format="gguf", config=cfg, entries=entries, loader=g.get,
        name=g.path.stem, tokenizer_json=lambda: tokenizer_json(g),
        chat_template=g.get_kv("tokenizer.chat_template"), arch=arch, metadata=metadata_dict(g),
    )
    store.gguf = g  # type: ignore[attr-defined]  # the parsed file, for convert and the TUI
    return store


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o))


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=_json_default)
