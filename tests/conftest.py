"""Shared test fixtures: tiny HF-format models made with transformers, and the real SmolLM2.

Tiny models are saved with ``save_pretrained`` (safetensors + config.json) and a
small real BPE tokenizer, so every format path is the real one. The SmolLM2
fixture fetches the model once per machine into the user cache (see
``lminspect fetch smollm2``); a file lock keeps xdist workers from racing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Two xdist workers on two cores: one torch thread each avoids oversubscription.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("LMINSPECT_LOAD_PLUGINS", os.environ.get("LMINSPECT_LOAD_PLUGINS", "1"))

TINY_TEXT = (
    "Once upon a time there was a little model. It read many books and learned many words. "
    "The weights were small but the stories were long. Every layer added a little more meaning. "
    "In the end the model could finish a sentence, and sometimes even a story.\n"
)


def _torch_threads() -> None:
    import torch

    torch.set_num_threads(1)


def make_tokenizer_json(out_dir: Path, vocab_size: int = 256) -> Path:
    """Train a tiny byte-level BPE tokenizer (real tokenizers library, real tokenizer.json)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([TINY_TEXT] * 20, trainer=trainer)
    path = out_dir / "tokenizer.json"
    tok.save(str(path))
    return path


def _save_hf(model, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    make_tokenizer_json(out_dir, vocab_size=model.config.vocab_size)
    return out_dir


def make_tiny_llama(out_dir: Path, *, tie: bool = False, seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    _torch_threads()
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=tie,
        bos_token_id=0, eos_token_id=0,
    )
    return _save_hf(LlamaForCausalLM(cfg).eval(), out_dir)


def make_tiny_gpt2(out_dir: Path, seed: int = 0) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    _torch_threads()
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=300, n_positions=128, n_embd=64, n_layer=3, n_head=4,
                     bos_token_id=0, eos_token_id=0)
    return _save_hf(GPT2LMHeadModel(cfg).eval(), out_dir)


def make_tiny_falcon(out_dir: Path, seed: int = 0) -> Path:
    """Falcon-RW layout (ALiBi, LayerNorm, GeLU, not multi-query), as falcon-rw-1b."""
    import torch
    from transformers import FalconConfig, FalconForCausalLM

    _torch_threads()
    torch.manual_seed(seed)
    cfg = FalconConfig(
        vocab_size=300, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
        alibi=True, multi_query=False, new_decoder_architecture=False, parallel_attn=False,
        bias=True, bos_token_id=0, eos_token_id=0,
    )
    return _save_hf(FalconForCausalLM(cfg).eval(), out_dir)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_llama_tied_dir(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama_tied"), tie=True)


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    return make_tiny_gpt2(tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture(scope="session")
def tiny_falcon_dir(tmp_path_factory) -> Path:
    return make_tiny_falcon(tmp_path_factory.mktemp("tiny_falcon"))


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """Path to the real SmolLM2-135M-Instruct GGUF, fetched once per machine."""
    from lminspect.weights.fetch import fetch

    return fetch("smollm2").gguf_path


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The real SmolLM2 converted to a HF-style directory (cached per machine)."""
    from lminspect.weights.fetch import fetch

    return fetch("smollm2").hf_dir


@pytest.fixture
def anyio_backend():
    """Async tests (TUI Pilot tests) run on anyio's pytest plugin with the asyncio backend."""
    return "asyncio"


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """Stats cache and recent.json in a temp dir, so a test sees a fresh user
    (TUI modules use it with ``pytest.mark.usefixtures("private_cache")``)."""
    monkeypatch.setenv("LMINSPECT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def scaled_copy(tiny_llama_dir, tmp_path):
    """The tiny llama with every tensor of layer 2 multiplied by 2 (a known diff)."""
    from safetensors.numpy import load_file, save_file

    out = tmp_path / "scaled"
    shutil.copytree(tiny_llama_dir, out)
    tensors = load_file(str(out / "model.safetensors"))
    for k in tensors:
        if ".layers.2." in k:
            tensors[k] = tensors[k] * 2
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


@pytest.fixture
def torchrun():
    """Run ``torchrun --standalone --nproc_per_node N ARGS`` (the real launcher, gloo on CPU, one
    thread per process) and return the CompletedProcess; ARGS starts with ``-m lminspect ...`` or a
    script path.

    Nothing here depends on the machine being quiet or named: the rendezvous store takes a free port
    the OS picks (``--standalone``: two xdist workers' launches never clash), the ranks meet on the
    loopback address (not whatever the host name resolves to), and the wait is generous (a loaded
    2-core machine imports torch in three processes at once). Past it the launcher and its ranks are
    killed together (a session of their own), so no orphaned rank keeps loading the machine."""
    import signal
    import subprocess
    import sys

    def run(args: list[str], nproc: int = 2, timeout: float = 600) -> subprocess.CompletedProcess:
        exe = Path(sys.executable).with_name("torchrun")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]
        # plain --standalone: pinning gloo to loopback (--local-addr, GLOO_SOCKET_IFNAME=lo) made a rank
        # abort at exit ("terminate called without an active exception") about one run in three
        cmd += ["--standalone", "--nproc_per_node", str(nproc), *args]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(f"torchrun {' '.join(args[:3])} ... still running after {timeout:.0f} s; its stderr ends:\n"
                        f"{err[-3000:]}")
        except BaseException:  # Ctrl-C, a failing test run: the ranks go too
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    return run
