"""GGUF SentencePiece (``tokenizer.ggml.model = llama``) tokenizers: ids equal HF transformers' on the same file.

The GGUF is made here, offline: a BPE trained SentencePiece-style with ``tokenizers`` (``▁`` for
spaces, pieces ranked by score, no merges in the file), plus ``<unk> <s> </s>``, the 256 ``<0xXX>``
byte tokens, a control and a user-defined token, on tiny llama weights whose vocabulary fits it.
"""

from __future__ import annotations

import json
import random

import pytest
from test_weights_gguf import write_llama_gguf

from lminspect.errors import FormatError
from lminspect.weights import open_store

_WORDS = (
    "the a little model read many books and learned words weights were small but stories long every "
    "layer added more meaning in end could finish sentence sometimes even story once upon time there "
    "was tokenizer merges pieces bytes café naïve señor über déjà vu résumé 2024 42 7 3.14 (yes) no! "
    "why? it's don't: one, two; three - four / five"
).split()
SPECIALS = ["<unk>", "<s>", "</s>"]
CONTROL, USER = "<|im_start|>", "<think>"  # token types 3 and 4, appended after the pieces

TEXTS = [
    "Once upon a time there was a little model.",
    "the weights were small but the stories were long",
    " leading space",
    "trailing space ",
    "  two  spaces  between   three",
    "   ",
    "line one\nline two\n\n\ttabbed\tend",
    "\n",
    "windows\r\nline",
    "digits 0123456789 and 3.14159, 1,000,000",
    "punctuation: (a) [b] {c} <d> !?;:'\"-_/\\@#$%^&*+=~`|",
    "Hello , world . it 's done !",
    "accents: café naïve über señor Ångström øre ŷ",
    "CJK 中文字符 and kana かな",
    "emoji 🙂🚀 and a family 👩‍💻 ok",
    "",
    "a <s> b </s> c <|im_start|>user <think>hm</think>",
    "\u2581literal metaspace\u2581",
]


def _training_lines(n: int = 400) -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 14))) for _ in range(n)]


def spm_vocab(vocab_size: int = 400) -> tuple[list[str], list[float], list[int]]:
    """(tokens, scores, token types) of a SentencePiece-style BPE, laid out as llama.cpp's converter does."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.train_from_iterator(_training_lines(), trainer=trainers.BpeTrainer(vocab_size=vocab_size,
                                                                            show_progress=False))
    model = tok.get_vocab()
    merged = list(dict.fromkeys(a + b for a, b in _merges(tok)))
    chars = sorted(set(model) - set(merged), key=model.get)
    pieces = merged + chars  # SentencePiece order: merged pieces best first, then single characters
    tokens = SPECIALS + [f"<0x{b:02X}>" for b in range(256)] + pieces + [CONTROL, USER]
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))] + [0.0, 0.0]
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces) + [3, 4]
    return tokens, scores, types


def _merges(tok) -> list[tuple[str, str]]:
    raw = json.loads(tok.to_str())["model"]["merges"]
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in raw]


def spm_tokenizer_writer(tokens, scores, types, **flags):
    """``add_tokenizer`` for write_llama_gguf: a llama (SentencePiece) vocabulary, no merges."""

    def add(w, src) -> None:
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_unk_token_id(0)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        if "pad" in flags:
            w.add_pad_token_id(flags["pad"])
        if "add_bos" in flags:
            w.add_add_bos_token(flags["add_bos"])
        if "add_eos" in flags:
            w.add_add_eos_token(flags["add_eos"])

    return add


def _tiny_llama(out_dir, vocab_size: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(cfg).eval().save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def vocab():
    return spm_vocab()


@pytest.fixture(scope="module")
def tiny_spm_dir(vocab, tmp_path_factory):
    return _tiny_llama(tmp_path_factory.mktemp("spm_llama"), len(vocab[0]))


# default: no add_bos/add_eos keys (llama.cpp and HF add bos); the other file says eos only, and has a pad id
FLAVOURS = {"default": {}, "eos_only": {"add_bos": False, "add_eos": True, "pad": 0}}


@pytest.fixture(scope="module", params=sorted(FLAVOURS))
def flags(request):
    return FLAVOURS[request.param]


@pytest.fixture(scope="module")
def spm_gguf(flags, vocab, tiny_spm_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("spm") / "tiny-spm.gguf"
    return write_llama_gguf(tiny_spm_dir, path, quant_q8=False, add_tokenizer=spm_tokenizer_writer(*vocab, **flags))


@pytest.fixture(scope="module")
def ours(spm_gguf):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(open_store(spm_gguf).tokenizer_json())


@pytest.fixture(scope="module")
def hf(spm_gguf):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spm_gguf.parent, gguf_file=spm_gguf.name)


def _assert_same(ours, hf, text: str) -> None:
    for special in (True, False):
        ids = ours.encode(text, add_special_tokens=special).ids
        assert ids == hf.encode(text, add_special_tokens=special), (text, special)
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip), text


@pytest.mark.parametrize("text", TEXTS)
def test_ids_and_decode_match_transformers(ours, hf, text):
    _assert_same(ours, hf, text)


def test_pairs_and_bos_eos_follow_the_metadata(ours, hf, flags):
    enc = ours.encode("first part", "second part")
    ref = hf("first part", "second part", return_token_type_ids=True)
    assert enc.ids == ref["input_ids"] and enc.type_ids == ref["token_type_ids"]
    ids = ours.encode("hi").ids
    assert (ids[0] == 1) == flags.get("add_bos", True)
    assert (ids[-1] == 2) == flags.get("add_eos", False)


def test_vocabulary_is_really_used(ours):
    """The test vocabulary merges real words, and unseen characters go through byte tokens."""
    pieces = ours.encode("the little model", add_special_tokens=False).tokens
    assert "\u2581the" in pieces and len(pieces) < len("the little model") / 2
    cjk = ours.encode("中🙂", add_special_tokens=False).tokens
    assert cjk[1:] == ["<0xE4>", "<0xB8>", "<0xAD>", "<0xF0>", "<0x9F>", "<0x99>", "<0x82>"]
    assert ours.decode(ours.encode("naïve 中🙂 end").ids) == "naïve 中🙂 end"
    assert ours.encode(CONTROL + USER, add_special_tokens=False).tokens == [CONTROL, USER]


def test_roundtrip_like_transformers(ours, hf):
    for text in TEXTS:
        ids = ours.encode(text).ids
        got, want = ours.decode(ids, skip_special_tokens=True), hf.decode(ids, skip_special_tokens=True)
        assert got == want
        if not text.startswith(" ") and not any(t in text for t in (*SPECIALS, CONTROL, "\u2581")):
            assert got == text  # lossless but for a leading space, special tokens and a literal "▁"


def test_convert_dir_tokenizer_loads_in_transformers(spm_gguf, hf, tmp_path):
    from transformers import AutoTokenizer
    from typer.testing import CliRunner

    from lminspect.cli import app

    out = tmp_path / "hf"
    res = CliRunner().invoke(app, ["convert", str(spm_gguf), str(out)])
    assert res.exit_code == 0, res.output
    converted = AutoTokenizer.from_pretrained(out)
    for text in TEXTS:
        _assert_same_hf(converted, hf, text)
    assert converted.bos_token == "<s>" and converted.eos_token == "</s>" and converted.unk_token == "<unk>"


def _assert_same_hf(a, b, text: str) -> None:
    for special in (True, False):
        ids = b.encode(text, add_special_tokens=special)
        assert a.encode(text, add_special_tokens=special) == ids, (text, special)
        assert a.decode(ids, skip_special_tokens=True) == b.decode(ids, skip_special_tokens=True), text


def test_engine_tokenizer_streams_byte_fallback(spm_gguf):
    """lminspect's own tokenizer: bos/eos ids, and streaming never shows half a UTF-8 character."""
    from lminspect.tokenizer import load_tokenizer

    tok = load_tokenizer(open_store(spm_gguf))
    assert tok.bos_id == 1 and tok.eos_id == 2
    text = "naïve 中文 🙂 ok\tthe end"
    ids = tok.encode(text, add_special_tokens=False)
    assert sum(3 <= i < 259 for i in ids) >= 10  # CJK and the emoji are byte tokens
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # so single ids do split characters
    dec = tok.decode_stream()
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    dec = tok.decode_stream()  # with bos first, as generation prompts start
    assert "".join([dec.push(i) for i in tok.encode(text)] + [dec.flush()]) == text


def _tokenizer_only_gguf(path, model: str, arch: str = "llama", tokens: bool = True):
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), arch)
    w.add_tokenizer_model(model)
    if tokens:
        w.add_token_list(["<unk>", "<s>", "</s>", "a"])
    w.add_token_scores([0.0, 0.0, 0.0, -1.0])
    w.add_token_types([2, 3, 3, 1])
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize(("model", "arch", "what"), [
    ("bert", "llama", "tokenizer model 'bert'"),
    ("t5", "llama", "tokenizer model 't5'"),
    ("llama", "gemma", "tokenizer model 'llama' of architecture 'gemma'"),
])
def test_unsupported_tokenizer_models_say_so(tmp_path, model, arch, what):
    path = _tokenizer_only_gguf(tmp_path / f"{model}.gguf", model, arch)
    store = open_store(path)
    with pytest.raises(FormatError) as e:
        store.tokenizer_json()
    msg = e.value.message
    assert msg == f"{path}: {what} is not supported (supported: gpt2 (byte-level BPE), llama (SentencePiece BPE))"
    assert "\n" not in msg


def test_vocabulary_missing_says_so(tmp_path):
    path = _tokenizer_only_gguf(tmp_path / "notokens.gguf", "llama", tokens=False)
    with pytest.raises(FormatError, match="no tokenizer.ggml.tokens"):
        open_store(path).tokenizer_json()
