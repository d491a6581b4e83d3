"""Gemma 1/2/3, Phi-3, GPT-NeoX (Pythia) and StableLM against transformers (test-only oracle).

Each variant is built with transformers' own config class at a tiny size, every norm weight and
bias perturbed (so ``1 + w`` norms, biases and LayerNorm offsets all matter), saved with
``save_pretrained`` and opened by lminspect's weight store. Logits must match in float32 within
1e-4: a full prefill, KV-cache decode token by token (after a chunked prefix), and a left-padded
batch. Windows are shorter than the prompts, so sliding layers really slide.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from family_oracles import add_gguf_sizes

from lminspect.models import load_model
from lminspect.weights import open_store

TOL = 1e-4
V = 300


def _perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Every norm weight and every bias moves off its init (zeros / ones); query/key projections and
    embeddings grow so that scores and logits reach the soft caps' nonlinear range."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
            elif name.endswith(("q_proj.weight", "k_proj.weight", "qkv_proj.weight", "query_key_value.weight")):
                p.mul_(6.0)
            elif name.endswith(("embed_tokens.weight", "embed_in.weight", "lm_head.weight", "embed_out.weight")):
                p.mul_(5.0)


def _gemma(version: int, **kw):
    import transformers as tf

    base = dict(vocab_size=V, hidden_size=48, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, max_position_embeddings=128, bos_token_id=0, eos_token_id=1,
                pad_token_id=0)
    if version == 1:
        return tf.GemmaConfig(**{**base, **kw}), tf.GemmaForCausalLM
    if version == 2:
        base.update(sliding_window=6, query_pre_attn_scalar=12, attn_logit_softcapping=5.0,
                    final_logit_softcapping=3.0)
        return tf.Gemma2Config(**{**base, **kw}), tf.Gemma2ForCausalLM
    base.update(sliding_window=5, query_pre_attn_scalar=20, rope_theta=5000.0, rope_local_base_freq=300.0,
                layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"])
    return tf.Gemma3TextConfig(**{**base, **kw}), tf.Gemma3ForCausalLM


def _phi3(**kw):
    import transformers as tf

    base = dict(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, bos_token_id=0, eos_token_id=1, pad_token_id=0,
                sliding_window=None)
    return tf.Phi3Config(**{**base, **kw}), tf.Phi3ForCausalLM


def _neox(**kw):
    import transformers as tf

    base = dict(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                max_position_embeddings=128, rotary_pct=0.25, bos_token_id=0, eos_token_id=1)
    return tf.GPTNeoXConfig(**{**base, **kw}), tf.GPTNeoXForCausalLM


def _stablelm(**kw):
    import transformers as tf

    base = dict(vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, partial_rotary_factor=0.25, bos_token_id=0,
                eos_token_id=1)
    return tf.StableLmConfig(**{**base, **kw}), tf.StableLmForCausalLM


VARIANTS = {
    "gemma": lambda: _gemma(1),
    "gemma-untied-bias-gelu": lambda: _gemma(1, tie_word_embeddings=False, attention_bias=True, hidden_act="gelu",
                                             head_dim=24, num_key_value_heads=1),
    "gemma2": lambda: _gemma(2),
    "gemma2-untied-nocap": lambda: _gemma(2, tie_word_embeddings=False, attn_logit_softcapping=None,
                                          final_logit_softcapping=None, attention_bias=True, head_dim=12),
    "gemma2-all-sliding": lambda: _gemma(2, layer_types=["sliding_attention"] * 4, sliding_window=3),
    "gemma3": lambda: _gemma(3),
    "gemma3-linear-rope-untied": lambda: _gemma(3, rope_scaling={"rope_type": "linear", "factor": 4.0},
                                                tie_word_embeddings=False, num_key_value_heads=4, head_dim=8,
                                                final_logit_softcapping=7.0),
    "gemma3-default-pattern": lambda: _gemma(3, num_hidden_layers=7, layer_types=None, sliding_window_pattern=3),
    "phi3": lambda: _phi3(),
    "phi3-window-partial-tied": lambda: _phi3(sliding_window=7, partial_rotary_factor=0.5, tie_word_embeddings=True),
    "phi3-mha": lambda: _phi3(num_key_value_heads=6, hidden_size=48, num_attention_heads=6),
    "gptneox-parallel": lambda: _neox(),
    "gptneox-serial-nobias": lambda: _neox(use_parallel_residual=False, attention_bias=False, rotary_pct=1.0,
                                           hidden_act="gelu_new"),
    "gptneox-tied-half": lambda: _neox(tie_word_embeddings=True, rotary_pct=0.5, num_attention_heads=2,
                                       rotary_emb_base=500),
    "gptneox-odd-rotary": lambda: _neox(hidden_size=48, num_attention_heads=8, rotary_pct=0.5),  # 3 of 6 channels
    "phi3-odd-rotary": lambda: _phi3(hidden_size=48, num_attention_heads=8, num_key_value_heads=4,
                                     partial_rotary_factor=0.5),
    "stablelm": lambda: _stablelm(),
    "stablelm-qkbias-qknorm": lambda: _stablelm(use_qkv_bias=True, qk_layernorm=True),
    "stablelm-parallel-tied": lambda: _stablelm(use_parallel_residual=True, tie_word_embeddings=True,
                                                num_key_value_heads=4, partial_rotary_factor=0.5),
}


def build(tmp_path, name: str, seed: int = 0):
    """(HF model, lminspect model) of a variant, through save_pretrained and the weight store."""
    torch.manual_seed(seed)
    cfg, cls = VARIANTS[name]()
    cfg._attn_implementation = "eager"
    hf = cls(cfg).eval()
    _perturb(hf, seed)
    hf.save_pretrained(tmp_path / name)
    hf = cls.from_pretrained(tmp_path / name, attn_implementation="eager").eval()  # what was saved
    return hf, load_model(open_store(tmp_path / name))


@pytest.fixture(params=sorted(VARIANTS))
def pair(request, tmp_path):
    return build(tmp_path, request.param)


@torch.inference_mode()
def test_prefill_matches_hf(pair):
    hf, ours = pair
    ids = torch.randint(0, V, (2, 17), generator=torch.Generator().manual_seed(1))
    ref = hf(ids).logits
    assert ref.std() > 1e-2
    assert (ours(ids) - ref).abs().max().item() < TOL


@torch.inference_mode()
def test_decode_matches_hf(pair):
    hf, ours = pair
    ids = torch.randint(0, V, (2, 16), generator=torch.Generator().manual_seed(2))
    ref = hf(ids).logits
    cache = ours.new_cache(batch_size=2, max_len=4)  # small: the cache must grow
    parts = [ours(ids[:, :5], cache=cache), ours(ids[:, 5:8], cache=cache)]
    parts += [ours(ids[:, t:t + 1], cache=cache) for t in range(8, 16)]
    assert (torch.cat(parts, 1) - ref).abs().max().item() < TOL


@torch.inference_mode()
def test_left_padded_batch_matches_hf(pair):
    hf, ours = pair
    ids = torch.randint(2, V, (3, 14), generator=torch.Generator().manual_seed(3))
    pad = torch.tensor([0, 3, 6])
    mask = (torch.arange(14)[None] >= pad[:, None]).long()
    ids = ids.masked_fill(mask == 0, 0)
    ref = hf(ids, attention_mask=mask).logits
    got = ours(ids, pad=pad)
    for b in range(3):
        assert (got[b, pad[b]:] - ref[b, pad[b]:]).abs().max().item() < TOL


REFUSALS = [  # (variant, config changes, what the one line must say)
    ("phi3", {"rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0] * 8,
                                  "long_factor": [2.0] * 8, "partial_rotary_factor": 1.0}},
     "phi3 with rope_parameters="),
    ("gemma3", {"attn_logit_softcapping": 50.0}, "gemma3 with attn_logit_softcapping=50.0 is not supported"),
    ("gemma2", {"use_bidirectional_attention": True}, "gemma2 with use_bidirectional_attention=True"),
    ("gptneox-parallel", {"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}},
     "gptneox with rope_parameters="),
    ("gemma3", {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"]},
     "gemma3-vision is a vision-language model, which is not supported"),
    ("stablelm", {"qk_layernorm_bias": True}, "stablelm with qk_layernorm_bias=True is not supported"),
    ("stablelm", {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.1875}},
     "stablelm with partial_rotary_factor=0.1875 is not supported"),  # 3 of 16 channels: transformers' split differs
]


@pytest.mark.parametrize("variant, changes, needle", REFUSALS, ids=[f"{r[0]}-{i}" for i, r in enumerate(REFUSALS)])
def test_unsupported_settings_are_refused_in_one_line(tmp_path, variant, changes, needle):
    import json

    import lminspect as li
    from lminspect.errors import UserError

    build(tmp_path, variant)
    path = tmp_path / variant
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, **changes}))
    with pytest.raises(UserError) as ei:
        li.open(path, weights="float32").logits([1, 2, 3])
    msg = str(ei.value.message)
    assert "\n" not in msg and needle in msg, msg


def _write_stablelm_gguf(src_dir, path):
    """A StableLM GGUF laid out as llama.cpp's converter writes it (checked against its output: same
    keys, names and shapes; no RoPE base key; per-head q/k norms stacked ``[n_head, head_dim]``)."""
    import re

    import gguf
    import numpy as np

    from lminspect.weights import open_store
    from lminspect.weights.families import GGUF_STABLELM

    src = open_store(src_dir)
    c = src.config
    w = gguf.GGUFWriter(str(path), "stablelm")
    add_gguf_sizes(w, c, layer_norm=True)
    hd = c["hidden_size"] // c["num_attention_heads"]
    w.add_rope_dimension_count(int(c["rope_parameters"]["partial_rotary_factor"] * hd))
    w.add_parallel_residual(c["use_parallel_residual"])
    stacked: dict[str, list] = {}
    for name in src.canonical_names():
        m = re.fullmatch(r"(layers\.\d+\.attn\.[qk]_norm)\.norms\.(\d+)\.weight", name)
        if m:
            stacked.setdefault(m[1] + ".weight", []).append(src.get_canonical(name))
            continue
        w.add_tensor(GGUF_STABLELM.to_hf(name), np.ascontiguousarray(src.get_canonical(name)))
    for name, rows in stacked.items():
        w.add_tensor(GGUF_STABLELM.to_hf(name), np.stack(rows))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _write_phi3_gguf(src_dir, path, **extra):
    """A Phi-3 GGUF laid out as llama.cpp's converter writes it (checked against its output): the
    fused ``attn_qkv`` / ``ffn_up`` as they are, the window in ``attention.sliding_window`` (0: none)."""
    import gguf
    import numpy as np
    import safetensors.numpy

    c = json.loads((src_dir / "config.json").read_text())
    w = gguf.GGUFWriter(str(path), "phi3")
    add_gguf_sizes(w, c)
    w.add_rope_dimension_count(int(c["rope_parameters"]["partial_rotary_factor"] * c["hidden_size"])
                               // c["num_attention_heads"])
    w.add_rope_freq_base(c["rope_parameters"]["rope_theta"])
    w.add_sliding_window(c.get("sliding_window") or 0)
    for name, a in extra.items():
        w.add_tensor(name, a)
    top = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
    blk = {"input_layernorm": "attn_norm", "self_attn.qkv_proj": "attn_qkv", "self_attn.o_proj": "attn_output",
           "post_attention_layernorm": "ffn_norm", "mlp.gate_up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for name, a in safetensors.numpy.load_file(str(src_dir / "model.safetensors")).items():
        mod, kind = name.rsplit(".", 1)
        m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", mod)
        w.add_tensor(f"blk.{m[1]}.{blk[m[2]]}.{kind}" if m else f"{top[mod]}.{kind}", np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("name", ["phi3", "phi3-window-partial-tied", "phi3-odd-rotary"])
def test_phi3_gguf_matches_hf(tmp_path, name):
    hf, _ = build(tmp_path, name)
    model = load_model(_write_phi3_gguf(tmp_path / name, tmp_path / f"{name}.gguf"))
    ids = torch.randint(0, V, (2, 15), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        assert (model(ids) - hf(ids).logits).abs().max().item() < TOL


def test_phi3_gguf_with_longrope_factors_is_refused(tmp_path):
    import numpy as np

    from lminspect.errors import UserError

    build(tmp_path, "phi3")
    f = np.ones(8, np.float32)
    path = _write_phi3_gguf(tmp_path / "phi3", tmp_path / "long.gguf", **{"rope_factors_long.weight": f,
                                                                           "rope_factors_short.weight": f})
    with pytest.raises(UserError, match="phi3 with gguf:rope_factors_long_short=True is not supported"):
        load_model(path)


@pytest.mark.parametrize("name", ["stablelm", "stablelm-qkbias-qknorm", "stablelm-parallel-tied"])
def test_stablelm_gguf_matches_hf(tmp_path, name):
    hf, _ = build(tmp_path, name)
    model = load_model(_write_stablelm_gguf(tmp_path / name, tmp_path / f"{name}.gguf"))
    ids = torch.randint(0, V, (2, 15), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        assert (model(ids) - hf(ids).logits).abs().max().item() < TOL


@pytest.mark.parametrize("arch", ["gemma", "gemma2", "gemma3", "gptneox"])
def test_gguf_of_these_families_is_refused_in_one_line(tmp_path, arch):
    """llama.cpp's layouts of these families are not read yet: a GGUF says so, never half-loads."""
    import gguf
    import numpy as np

    import lminspect as li
    from lminspect.errors import UserError

    path = tmp_path / f"{arch}.gguf"
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_embedding_length(8)
    w.add_head_count(2)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UserError) as ei:
        li.open(path, weights="float32").logits([1, 2])
    msg = str(ei.value.message)
    assert "\n" not in msg and "not supported" in msg and "missing tensor" not in msg, msg
