"""Streaming generation: ``generate(...)`` returns a ``Generation`` you iterate for text pieces.

Why an object and not a bare generator: the TUI needs to stop it between tokens (``cancel()``
from another thread, or simply stop iterating) and to show statistics afterwards (``.stats``).
The loop is built for small models on CPU, which are overhead-bound: inference mode, one
preallocated KV cache (one slot per plan occurrence), prefill computes logits for the last
position only, greedy picks with ``argmax``, and no per-step allocation beyond the forward.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

from lminspect.errors import UserError
from lminspect.models.layercall import LayerCall

if TYPE_CHECKING:  # annotations only
    from lminspect.models.common import LM

STOP_REASONS = ("eos", "stop", "max_tokens", "context", "cancelled")


@dataclass
class GenerationStats:
    prompt_tokens: int = 0  # tokens fed in the prefill
    new_tokens: int = 0  # tokens generated (the stop token included, stop strings not trimmed)
    ttft_s: float = 0.0  # from start to the first new token (prefill + one pick)
    decode_s: float = 0.0  # time spent after the first token
    total_s: float = 0.0
    stop_reason: str = ""  # one of STOP_REASONS ("" while running)
    weights: str = ""  # the matmul path (model.weights_label): "stored Q4_1+Q8_0", "float32", ...

    @property
    def tokens_per_s(self) -> float:
        """Decode speed: tokens after the first one / time after the first one."""
        return (self.new_tokens - 1) / self.decode_s if self.new_tokens > 1 and self.decode_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_s": self.tokens_per_s}

    def line(self) -> str:
        return (f"{self.prompt_tokens} prompt + {self.new_tokens} new tokens, TTFT {self.ttft_s * 1000:.0f} ms, "
                f"{self.tokens_per_s:.1f} tok/s, stop: {self.stop_reason}"
                + (f", weights: {self.weights}" if self.weights else ""))


def _stop_holdback(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of ``text`` could be the start of a stop string."""
    keep = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), keep, -1):
            if text.endswith(s[:n]):
                keep = n
                break
    return keep


class Sampler:
    """Turns last-position logits into a token id: greedy, or temperature / top-k / top-p sampling,
    with HF's repetition penalty (divide positive, multiply negative logits of seen tokens)."""

    def __init__(self, temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
                 repetition_penalty: float = 1.0, seed: int | None = None) -> None:
        import math

        for name, v in (("temperature", temperature), ("top_p", top_p), ("repetition_penalty", repetition_penalty)):
            if v is not None and not math.isfinite(v):
                raise UserError(f"--{name.replace('_', '-')} {v}: expected a finite number")
        if temperature < 0:
            raise UserError(f"temperature must be >= 0, got {temperature}")
        if top_p is not None and not 0 < top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {top_p}")
        if top_k is not None and top_k < 1:
            raise UserError(f"top_k must be >= 1, got {top_k}")
        if repetition_penalty <= 0:
            raise UserError(f"repetition_penalty must be > 0, got {repetition_penalty}")
        self.temperature = temperature
        self.top_k = top_k
        self.top_p = top_p
        self.penalty = repetition_penalty
        self.gen = torch.Generator()
        if seed is not None:
            self.gen.manual_seed(int(seed))
        else:
            self.gen.seed()

    def __call__(self, logits: torch.Tensor, seen: torch.Tensor | None = None) -> int:
        if self.penalty != 1.0 and seen is not None and seen.numel():
            logits = logits.float().clone()
            s = logits.gather(0, seen)
            logits.scatter_(0, seen, torch.where(s < 0, s * self.penalty, s / self.penalty))
        if self.temperature == 0.0:
            return greedy_pick(logits)
        logits = logits.float() / self.temperature
        if self.top_k is not None and self.top_k < logits.numel():
            kth = torch.topk(logits, self.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p is not None and self.top_p < 1.0:
            sorted_logits, idx = torch.sort(logits, descending=False)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            remove = cum <= (1 - self.top_p)
            remove[-1] = False  # keep at least the most likely token
            logits = logits.masked_fill(remove.scatter(0, idx, remove), float("-inf"))
        probs = torch.softmax(logits, -1)
        return int(torch.multinomial(probs.cpu(), 1, generator=self.gen))


def greedy_pick(logits: torch.Tensor) -> int:
    """The index of the largest logit (the first one on ties, a nan counting as largest, as
    ``torch.argmax``): numpy's argmax on a CPU float32 vector, ~20x faster than torch's (measured
    190 vs 8 us on SmolLM2's 49152 logits, 1 thread: a few percent of a decode step)."""
    if logits.device.type == "cpu" and logits.dtype == torch.float32 and logits.dim() == 1:
        return int(logits.detach().numpy().argmax())
    return int(logits.argmax())


def check_ids(ids: Sequence[int], vocab: Any, tokenizer: Any = None, what: str = "prompt") -> None:
    """Every id inside the model's vocabulary (``validate.token_ids``)."""
    from lminspect.validate import token_ids

    token_ids(list(ids), vocab, tokenizer, what)


def length_note(max_new_tokens: int, context: int, prompt_tokens: int) -> str | None:
    """One line when ``-n`` asks for more than the context leaves: said before, not minutes later."""
    room = max(0, context - prompt_tokens)
    if max_new_tokens <= room:
        return None
    return (f"-n {max_new_tokens} is more than the model's context of {context} tokens allows after the "
            f"{prompt_tokens}-token prompt: at most {room} new tokens")


class Generation:
    """An iterable of decoded text pieces with ``.stats`` (a ``GenerationStats``) afterwards.

    ``.ids`` holds the new token ids, ``.text`` the text yielded so far. ``cancel()`` (thread safe)
    stops the loop before the next token; breaking out of the ``for`` loop works too.
    """

    def __init__(self, model: LM, tokenizer: Any, prompt: str | Sequence[int] | torch.Tensor | list[dict[str, str]], *,
                 max_new_tokens: int = 64, temperature: float = 0.0, top_k: int | None = None,
                 top_p: float | None = None, repetition_penalty: float = 1.0, seed: int | None = None,
                 stop: Iterable[str] = (), plan: list[LayerCall] | None = None, chat: bool = False) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = int(max_new_tokens)
        if self.max_new_tokens < 0:
            raise UserError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        self.sampler = Sampler(temperature, top_k, top_p, repetition_penalty, seed)
        self.stop = tuple(s for s in (stop or ()) if s)
        self.plan = plan
        self.eos = set(tokenizer.eos_ids) if tokenizer is not None else set()
        if isinstance(prompt, torch.Tensor):  # token ids [T] or [1, T]; bool(tensor) must never be asked
            if prompt.dim() > 2 or (prompt.dim() == 2 and prompt.shape[0] != 1):
                raise UserError(f"a tensor prompt must be one sequence of token ids ([T] or [1, T]), "
                                f"got shape {list(prompt.shape)}")
            prompt = prompt.reshape(-1).tolist()
        if isinstance(prompt, str) or (len(prompt) > 0 and isinstance(prompt[0], dict)):
            if tokenizer is None:
                raise UserError("a text prompt needs a tokenizer")
            if chat:
                messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
                self.prompt_ids = tokenizer.encode_chat(messages)
                for name in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
                    tid = tokenizer.token_to_id(name)
                    if tid is not None:
                        self.eos.add(tid)
            else:
                self.prompt_ids = tokenizer.encode(prompt)
        else:
            self.prompt_ids = [int(i) for i in prompt]
        if not self.prompt_ids:
            raise UserError("empty prompt: give at least one token of text")
        ctx = model.context_length
        if len(self.prompt_ids) > ctx:
            raise UserError(f"prompt of {len(self.prompt_ids)} tokens exceeds the model's context of {ctx} tokens")
        check_ids(self.prompt_ids, getattr(model, "vocab_size", None), tokenizer)
        self.ids: list[int] = []
        self.text = ""
        self.stats = GenerationStats(prompt_tokens=len(self.prompt_ids),
                                     weights=str(getattr(model, "weights_label", "") or ""))
        self._cancel = threading.Event()
        self._started = False

    def cancel(self) -> None:
        self._cancel.set()

    def __iter__(self) -> Iterator[str]:
        if self._started:
            raise RuntimeError("a Generation can be iterated once")
        self._started = True
        return self._run()

    def _run(self) -> Iterator[str]:
        model, st = self.model, self.stats
        ctx = model.context_length
        n_prompt = len(self.prompt_ids)
        budget = min(self.max_new_tokens, ctx - n_prompt)
        decoder = self.tokenizer.decode_stream() if self.tokenizer is not None else None
        need_seen = self.sampler.penalty != 1.0
        seen = torch.tensor(self.prompt_ids, dtype=torch.long, device=model.device) if need_seen else None
        pending = ""  # decoded text not yet yielded (could still become a stop string)
        t0 = time.perf_counter()
        t_first = None
        reason = "max_tokens" if budget == self.max_new_tokens else "context"
        try:
            if budget <= 0:
                return
            with torch.inference_mode():
                dev = model.device
                cache = model.new_cache(self.plan, batch_size=1, max_len=n_prompt + budget)
                ids = torch.tensor([self.prompt_ids], dtype=torch.long, device=dev)
                logits = model(ids, cache=cache, last_only=True)[0, -1]
                next_logits = _stepper(model, cache, budget)
                for i in range(budget):
                    if self._cancel.is_set():
                        reason = "cancelled"
                        break
                    tok = self.sampler(logits, seen)
                    self.ids.append(tok)
                    st.new_tokens += 1
                    if t_first is None:
                        t_first = time.perf_counter()
                        st.ttft_s = t_first - t0
                    if tok in self.eos:
                        reason = "eos"
                        break
                    if decoder is not None:
                        pending += decoder.push(tok)
                        if self.stop and pending:
                            out, hit = self._check_stop(pending)
                            if hit:
                                if out:
                                    self.text += out
                                    yield out
                                pending = ""
                                reason = "stop"
                                break
                            if out:
                                pending = pending[len(out):]
                                self.text += out
                                yield out
                        elif pending:
                            self.text += pending
                            yield pending
                            pending = ""
                    if i + 1 == budget:
                        break
                    if need_seen:
                        seen = torch.cat([seen, seen.new_full((1,), tok)])
                    logits = next_logits(tok)
            if reason not in ("stop", "cancelled") and decoder is not None:
                pending += decoder.flush()
                if pending:
                    out, hit = self._check_stop(pending) if self.stop else (pending, False)
                    if hit:
                        reason = "stop"
                    else:
                        out = pending
                    if out:
                        self.text += out
                        yield out
        finally:
            if reason == "max_tokens" and self._cancel.is_set() and st.new_tokens < budget:
                reason = "cancelled"
            end = time.perf_counter()
            st.total_s = end - t0
            st.decode_s = end - t_first if t_first is not None else 0.0
            st.stop_reason = reason

    def _check_stop(self, pending: str) -> tuple[str, bool]:
        """(text safe to yield, whether a stop string was hit) for the not-yet-yielded text."""
        full = self.text + pending
        base = max(0, len(self.text) - max(len(s) for s in self.stop) + 1)
        hits = [i for i in (full.find(s, base) for s in self.stop) if i >= 0]
        if hits:
            cut = min(hits)
            return full[len(self.text):cut] if cut > len(self.text) else "", True
        hold = _stop_holdback(full, self.stop)
        return pending[:len(pending) - hold] if hold else pending, False


def generate(model: LM, tokenizer: Any, prompt: str | Sequence[int] | torch.Tensor | list[dict[str, str]], *,
             max_new_tokens: int = 64, temperature: float = 0.0, top_k: int | None = None,
             top_p: float | None = None, repetition_penalty: float = 1.0, seed: int | None = None,
             stop: Iterable[str] = (), plan: list[LayerCall] | None = None, chat: bool = False) -> Generation:
    """Stream a continuation of ``prompt`` (text, token ids as a list or tensor, or chat messages) as text pieces.

    ``temperature=0`` is greedy. Stops on an EOS id, a stop string (never yielded), or
    ``max_new_tokens``; ``.stats.stop_reason`` says which."""
    return Generation(model, tokenizer, prompt, max_new_tokens=max_new_tokens, temperature=temperature,
                      top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, seed=seed, stop=stop,
                      plan=plan, chat=chat)


def interleave(gens: Mapping[str, Iterable[str]], *,
               cancelled: Callable[[], bool] | None = None) -> Generator[tuple[str, str], None, None]:
    """Round-robin over several generations: ``(name, piece)``, one piece of each in turn, until all end.

    How ``stitch --compare`` and the TUI's Compare stream the baseline beside the plan.
    ``cancelled()`` is asked before each piece; however the loop ends, every generation's
    iterator is closed (its KV cache freed, its stats final).
    """
    iters = [(name, iter(g)) for name, g in gens.items()]
    active = list(iters)
    try:
        while active:
            for item in list(active):
                if cancelled is not None and cancelled():
                    return
                try:
                    piece = next(item[1])
                except StopIteration:
                    active.remove(item)
                    continue
                yield item[0], piece
    finally:
        for _, it in iters:
            close = getattr(it, "close", None)
            if close is not None:
                close()


@torch.inference_mode()
def greedy_ids(model: LM, ids: Sequence[int] | torch.Tensor, n: int,
               plan: list[LayerCall] | None = None) -> list[int]:
    """The ``n`` greedy continuation ids of ``ids`` (no EOS stop), with the KV cache."""
    ids_t = torch.as_tensor(ids, dtype=torch.long).view(1, -1).to(model.device)
    n = min(n, model.context_length - ids_t.shape[1])
    out: list[int] = []
    with torch.inference_mode():
        cache = model.new_cache(plan, batch_size=1, max_len=ids_t.shape[1] + n)
        logits = model(ids_t, cache=cache, last_only=True)[0, -1]
        next_logits = _stepper(model, cache, n)
        for i in range(n):
            tok = greedy_pick(logits)
            out.append(tok)
            if i + 1 < n:
                logits = next_logits(tok)
    return out


def _stepper(model: LM, cache: Any, steps: int) -> Any:
    """``next_logits(token) -> [vocab]``: one decode step on ``cache``, through the decode fast
    path (models/decode.py) when it applies and there is more than one step to pay for building
    it, else through the model."""
    if steps > 1:
        from lminspect.models.decode import fast_decoder

        fast = fast_decoder(model, cache)
        if fast is not None:
            return fast.step
    step = torch.empty(1, 1, dtype=torch.long, device=model.device)

    def through_model(tok: int) -> torch.Tensor:
        step.fill_(tok)
        return model(step, cache=cache)[0, -1]
    return through_model


__all__ = ["Generation", "GenerationStats", "Sampler", "generate", "greedy_ids", "interleave"]
