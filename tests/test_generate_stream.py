"""Streaming generation: UTF-8 safe incremental decode, stop strings, EOS, sampling seeds, cancel."""

from __future__ import annotations

import pytest
import torch
from test_models_helpers import store_for

from lminspect.errors import UserError
from lminspect.generate import generate, greedy_ids
from lminspect.models import load_model
from lminspect.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tok(tiny_llama_dir):
    return load_tokenizer(store_for(tiny_llama_dir))


@pytest.fixture(scope="module")
def model(tiny_llama_dir):
    return load_model(store_for(tiny_llama_dir))


class Scripted:
    """A stand-in LM that emits a fixed token script (tests the loop, not the model)."""

    context_length = 512
    device = torch.device("cpu")

    def __init__(self, script: list[int], vocab: int = 300) -> None:
        self.script, self.vocab, self.calls = script, vocab, 0

    def new_cache(self, plan=None, batch_size=1, max_len=None):
        return {"n": 0}

    def __call__(self, ids, *, cache=None, plan=None, last_only=False):
        n = cache["n"]
        cache["n"] += 1
        self.calls += 1
        logits = torch.zeros(1, 1, self.vocab)
        logits[0, 0, self.script[min(n, len(self.script) - 1)]] = 10.0
        return logits


def test_tokenizer_basics(tok):
    ids = tok.encode("Once upon a time")
    assert tok.decode(ids) == "Once upon a time"
    assert tok.eos_id == 0 and tok.eos_ids == [0]


def test_stream_decode_never_splits_utf8(tok):
    text = "héllo wörld — 世界 🙂 ok"
    ids = tok.encode(text)
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # the test really splits characters
    dec = tok.decode_stream()
    pieces = [dec.push(i) for i in ids]
    pieces.append(dec.flush())
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_generate_utf8_pieces(tok):
    script = tok.encode("naïve 世界!") + [0]
    g = generate(Scripted(script), tok, "Once", max_new_tokens=50)
    pieces = list(g)
    assert "".join(pieces) == "naïve 世界!"
    assert not any("\ufffd" in p for p in pieces)
    assert g.stats.stop_reason == "eos" and g.stats.new_tokens == len(script)


@pytest.mark.parametrize("stop", ["STOP", "P h", "there"])
def test_stop_strings_are_cut_and_never_yielded(tok, stop):
    script = tok.encode("Hello there. STOP here and more text")
    g = generate(Scripted(script), tok, "Once", max_new_tokens=100, stop=[stop, "never-seen"])
    pieces = list(g)
    text = "".join(pieces)
    assert text == "Hello there. STOP here and more text".split(stop)[0]
    assert g.stats.stop_reason == "stop"
    assert g.text == text


def test_max_tokens_and_stats(tok):
    g = generate(Scripted(tok.encode("abc abc abc abc abc")), tok, "Once upon", max_new_tokens=3)
    list(g)
    st = g.stats
    assert st.new_tokens == 3 and st.stop_reason == "max_tokens"
    assert st.prompt_tokens == len(tok.encode("Once upon"))
    assert st.ttft_s > 0 and st.total_s >= st.ttft_s
    assert "tok/s" in st.line()


def test_cancel_between_tokens(tok):
    m = Scripted(tok.encode("a b c d e f g h i j k l m n"))
    g = generate(m, tok, "Once", max_new_tokens=50)
    it = iter(g)
    next(it)
    g.cancel()
    rest = list(it)
    assert len(rest) <= 1
    assert g.stats.stop_reason == "cancelled"
    assert m.calls <= 3


def test_break_out_of_loop_stops_generation(tok):
    m = Scripted(tok.encode("a b c d e f g h i j k l m n"))
    g = generate(m, tok, "Once", max_new_tokens=50)
    for _piece in g:
        break
    assert m.calls <= 2


def test_greedy_matches_full_forward_argmax(model):
    ids = torch.randint(1, 300, (12,), generator=torch.Generator().manual_seed(5)).tolist()
    out = greedy_ids(model, ids, 8)
    seq = list(ids)
    with torch.inference_mode():
        for _ in range(8):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    assert out == seq[len(ids):]


def test_sampling_with_seed_is_reproducible(model, tok):
    kw = dict(max_new_tokens=12, temperature=1.0, top_k=50, top_p=0.9, repetition_penalty=1.2)
    a = generate(model, tok, "Once upon a time", seed=7, **kw)
    b = generate(model, tok, "Once upon a time", seed=7, **kw)
    c = generate(model, tok, "Once upon a time", seed=8, **kw)
    list(a), list(b), list(c)
    assert a.ids == b.ids
    assert a.ids != c.ids or a.text != c.text or len(a.ids) < 3


def test_greedy_generate_equals_greedy_ids(model, tok):
    g = generate(model, tok, "Once upon a time", max_new_tokens=10)
    text = "".join(g)
    ref = greedy_ids(model, tok.encode("Once upon a time"), 10)
    cut = next((i for i, t in enumerate(ref) if t in tok.eos_ids), len(ref))
    assert g.ids == ref[:cut + 1] if cut < len(ref) else g.ids == ref
    assert text == tok.decode(ref[:cut])


def test_bad_arguments(model, tok):
    with pytest.raises(UserError, match="temperature"):
        generate(model, tok, "x", temperature=-1)
    with pytest.raises(UserError, match="top_p"):
        generate(model, tok, "x", top_p=1.5)
    with pytest.raises(UserError, match="context"):
        generate(model, tok, list(range(1, 200)) * 2)
    with pytest.raises(UserError, match="chat template"):
        list(generate(model, tok, "hi", chat=True))


def test_chat_template_render(tok):
    from lminspect.tokenizer import Tokenizer

    t = Tokenizer(tok.tok, bos_id=None, eos_ids=[0], chat_template=(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"))
    out = t.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert out == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_tensor_prompt_is_token_ids(tok):
    """A tensor prompt ([T] or [1, T]) is read as token ids, like a list; a batch is refused in one line."""
    ids = tok.encode("Once upon")
    want = list(generate(Scripted(tok.encode("abc abc")), tok, ids, max_new_tokens=3))
    for prompt in (torch.tensor(ids), torch.tensor([ids])):
        g = generate(Scripted(tok.encode("abc abc")), tok, prompt, max_new_tokens=3)
        assert list(g) == want and g.prompt_ids == ids
    with pytest.raises(UserError, match=r"one sequence of token ids.*\[2, "):
        generate(Scripted([1]), tok, torch.tensor([ids, ids]))


def test_interleave_round_robin_and_closes_every_stream(tok):
    """One piece of each generation in turn until all end; cancelling stops before the next piece."""
    from lminspect.generate import interleave

    a = generate(Scripted(tok.encode(" a a a a")), tok, "x", max_new_tokens=4)
    b = generate(Scripted(tok.encode(" b b")), tok, "x", max_new_tokens=2)
    got = list(interleave({"a": a, "b": b}))
    assert [n for n, _ in got] == ["a", "b", "a", "b", "a", "a"]
    assert "".join(p for n, p in got if n == "a") == a.text and a.stats.new_tokens == 4
    m = Scripted(tok.encode(" c c c c c c c c"))
    c = generate(m, tok, "x", max_new_tokens=50)
    seen: list[str] = []
    for name, _ in interleave({"c": c}, cancelled=lambda: len(seen) >= 2):
        seen.append(name)
    assert seen == ["c", "c"] and m.calls <= 3  # closed: no token computed past the cancel
