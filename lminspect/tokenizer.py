"""Tokenizer: HF ``tokenizers`` over the store's tokenizer.json, plus chat templates and streaming decode.

Why a wrapper: the engine needs one object that knows the special ids (bos/eos from the config,
generation_config or the tokenizer's own special tokens), renders chat templates with jinja2 the
way HF does (without importing transformers), and decodes a growing id list incrementally without
ever emitting half a UTF-8 character.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lminspect.errors import UserError

_EOS_NAMES = ("<|endoftext|>", "<|im_end|>", "</s>", "<eos>", "<|end_of_text|>", "<|eot_id|>")
_BOS_NAMES = ("<s>", "<|begin_of_text|>", "<bos>")


def _ids(v: Any) -> list[int]:
    if v is None:
        return []
    if isinstance(v, (list, tuple)):
        return [int(x) for x in v if x is not None]
    return [int(v)]


def _side_json(store: Any, name: str) -> dict:
    """A JSON file next to the weights (generation_config.json, tokenizer_config.json), if any."""
    path = getattr(store, "path", None)
    if path is None:
        return {}
    p = Path(path)
    p = p if p.is_dir() else p.parent
    f = p / name
    if not (f.exists() or f.is_symlink()):
        return {}
    from lminspect.fsutil import read_regular

    try:
        data = json.loads(read_regular(f, limit=16 << 20).decode("utf-8"))
    except (OSError, ValueError, RecursionError, UserError) as e:
        why = e.message if isinstance(e, UserError) else str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        _warn_once(f"{f}: ignored, not readable JSON ({why}); its token ids and settings are not used")
        return {}
    if not isinstance(data, dict):
        _warn_once(f"{f}: ignored, not a JSON object")
        return {}
    return data


_warned: set[str] = set()


def _warn_once(line: str) -> None:
    import sys

    if line not in _warned:
        _warned.add(line)
        print(f"lminspect: warning: {line}", file=sys.stderr)


class StreamDecoder:
    """Incremental detokenizer: ``push(id) -> str`` returns only text that is complete.

    It re-decodes a short window (``ids[prefix:]`` vs ``ids[prefix:read]``) and emits the
    difference once it no longer ends in U+FFFD, so a character split over byte tokens is held
    back until its last byte arrives, and decoders that strip a leading space (SentencePiece)
    still get spaces right. ``flush()`` returns whatever is left (lossily) at the end.
    """

    def __init__(self, tok: Tokenizer, skip_special_tokens: bool = True) -> None:
        self.tok = tok
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def _dec(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=self.skip)

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        prev = self._dec(self.ids[self.prefix:self.read])
        text = self._dec(self.ids[self.prefix:])
        if len(text) > len(prev) and not text.endswith("\ufffd"):
            out = text[len(prev):]
            self.prefix, self.read = self.read, len(self.ids)
            return out
        return ""

    def flush(self) -> str:
        prev = self._dec(self.ids[self.prefix:self.read])
        text = self._dec(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return text[len(prev):] if text.startswith(prev) else ""


class Tokenizer:
    """``encode`` / ``decode`` / special ids / chat template around a ``tokenizers.Tokenizer``."""

    def __init__(self, tok: Any, *, bos_id: int | None = None, eos_ids: Iterable[int] = (),
                 chat_template: str | None = None, bos_token: str | None = None,
                 eos_token: str | None = None) -> None:
        self.tok = tok
        self.bos_id = bos_id
        self.eos_ids: list[int] = list(dict.fromkeys(eos_ids))
        self.chat_template = chat_template
        self.bos_token = bos_token if bos_token is not None else (
            self.tok.id_to_token(bos_id) if bos_id is not None else None)
        self.eos_token = eos_token if eos_token is not None else (
            self.tok.id_to_token(self.eos_ids[0]) if self.eos_ids else None)

    @property
    def eos_id(self) -> int | None:
        return self.eos_ids[0] if self.eos_ids else None

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.tok.id_to_token(int(token_id))

    def decode_stream(self, skip_special_tokens: bool = True) -> StreamDecoder:
        return StreamDecoder(self, skip_special_tokens)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True,
                            **extra: Any) -> str:
        """Render the model's chat template (jinja2, sandboxed, HF's options and helpers)."""
        if not self.chat_template:
            raise UserError("this model has no chat template (hint: generate without --chat)")
        import jinja2
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise UserError(f"chat template: {message}")

        def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
                   separators: Any = None, sort_keys: bool = False) -> str:
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                              sort_keys=sort_keys)

        def strftime_now(fmt: str) -> str:
            import datetime

            return datetime.datetime.now().strftime(fmt)

        env = _capped_sandbox(ImmutableSandboxedEnvironment)(trim_blocks=True, lstrip_blocks=True,
                                                              extensions=[loopcontrols])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = strftime_now
        try:
            template = env.from_string(self.chat_template)
            env.started = time.monotonic()
            parts, size = [], 0
            for piece in template.generate(messages=messages, add_generation_prompt=add_generation_prompt,
                                           bos_token=self.bos_token or "", eos_token=self.eos_token or "", **extra):
                size += len(piece)
                env.check(size)
                parts.append(piece)
            return "".join(parts)
        except UserError:
            raise
        except jinja2.TemplateError as e:
            raise UserError(f"chat template failed to render: {e}") from None
        except (TypeError, ValueError, AttributeError, KeyError, IndexError, ZeroDivisionError, OverflowError,
                RecursionError, MemoryError) as e:
            raise UserError(f"chat template failed to render: {type(e).__name__}: {e}") from None

    def encode_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """Chat prompt ids: the template already carries its special tokens, so none are added."""
        return self.encode(self.apply_chat_template(messages, add_generation_prompt), add_special_tokens=False)


CHAT_TEMPLATE_SECONDS = 5.0  # a chat prompt renders in milliseconds; a template looping longer is broken
CHAT_TEMPLATE_CHARS = 10_000_000


def _capped_sandbox(base: type) -> type:
    """A jinja sandbox that stops a template running past a time or size cap: every call and
    every ``*`` / ``**`` in the template checks the clock and the size of what it makes."""

    class Capped(base):  # type: ignore[misc, valid-type]
        intercepted_binops = frozenset(["*", "**"])
        started = 0.0

        def check(self, size: int = 0) -> None:
            if size > CHAT_TEMPLATE_CHARS:
                raise UserError(f"chat template: output exceeds {CHAT_TEMPLATE_CHARS:,} characters")
            if self.started and time.monotonic() - self.started > CHAT_TEMPLATE_SECONDS:
                raise UserError(f"chat template: still rendering after {CHAT_TEMPLATE_SECONDS:g} s; it loops "
                                "too long")

        def call(self, context: Any, obj: Any, *args: Any, **kwargs: Any) -> Any:
            self.check()
            return super().call(context, obj, *args, **kwargs)

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            self.check()
            if operator == "**" and isinstance(right, int | float) and abs(right) > 1000:
                raise UserError(f"chat template: exponent {right} is too large")
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > CHAT_TEMPLATE_CHARS:
                        raise UserError(f"chat template: a repeated value exceeds {CHAT_TEMPLATE_CHARS:,} items")
            return super().call_binop(context, operator, left, right)

    return Capped


def load_tokenizer(store: Any) -> Tokenizer:
    """The tokenizer of a TensorStore (or anything ``open_store`` accepts)."""
    from tokenizers import Tokenizer as HFTokenizer

    if not hasattr(store, "tokenizer_json"):
        from lminspect.weights import open_store

        store = open_store(store)
    text = store.tokenizer_json()
    name = getattr(store, "name", None) or getattr(store, "path", "model")
    if not text:
        raise UserError(f"{name}: no tokenizer found (expected tokenizer.json or GGUF tokenizer metadata)")
    try:
        tok = HFTokenizer.from_str(text)
    except Exception as e:  # tokenizers raises a bare Exception on bad JSON
        raise UserError(f"{name}: tokenizer.json could not be parsed: {e}") from e
    cfg = dict(getattr(store, "config", None) or {})
    gen = _side_json(store, "generation_config.json")
    tcfg = _side_json(store, "tokenizer_config.json")

    def tok_id(v: Any) -> int | None:
        if isinstance(v, dict):
            v = v.get("content")
        return tok.token_to_id(v) if isinstance(v, str) else None

    eos = _ids(gen.get("eos_token_id")) + _ids(cfg.get("eos_token_id"))
    if not eos and tok_id(tcfg.get("eos_token")) is not None:
        eos = [tok_id(tcfg["eos_token"])]
    if not eos:
        eos = [i for i in (tok.token_to_id(n) for n in _EOS_NAMES) if i is not None][:1]
    bos_l = _ids(gen.get("bos_token_id")) + _ids(cfg.get("bos_token_id"))
    bos = bos_l[0] if bos_l else tok_id(tcfg.get("bos_token"))
    if bos is None:
        bos = next((i for i in (tok.token_to_id(n) for n in _BOS_NAMES) if i is not None), None)
    vocab = tok.get_vocab_size(with_added_tokens=True)
    eos = [i for i in eos if 0 <= i < max(vocab, int(cfg.get("vocab_size") or 0))]
    chat = getattr(store, "chat_template", None) or tcfg.get("chat_template")
    if isinstance(chat, list):  # HF allows a list of named templates
        chat = next((t.get("template") for t in chat if t.get("name") == "default"), None)
    return Tokenizer(tok, bos_id=bos, eos_ids=eos, chat_template=chat)


__all__ = ["StreamDecoder", "Tokenizer", "load_tokenizer"]
