"""``quick_model(dir)``: a tiny random-init Llama saved as a HF directory, for quick sessions and demos.

It uses the engine itself (``lminspect.models.Llama``) and the BPE tokenizer shipped with the
training corpus, so nothing depends on transformers, the network or the test suite.
"""

from __future__ import annotations

from pathlib import Path


def quick_model(out_dir: str | Path, *, n_layer: int = 4, dim: int = 64, n_head: int = 4, n_kv_head: int = 2,
                seed: int = 0, overwrite: bool = False) -> Path:
    """Write (once) a tiny Llama HF dir: config.json, model.safetensors, tokenizer.json. Returns the dir."""
    out = Path(out_dir)
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file() and not overwrite:
        return out
    import torch

    from lminspect.models import Llama, LlamaConfig
    from lminspect.stitch import export_stitched
    from lminspect.train.data import BUILTIN_TOKENIZER, load_train_tokenizer

    tok = load_train_tokenizer(str(BUILTIN_TOKENIZER))
    cfg = LlamaConfig(vocab_size=tok.vocab_size, dim=dim, n_layer=n_layer, n_head=n_head, n_kv_head=n_kv_head,
                      head_dim=dim // n_head, ffn_dim=dim * 8 // 3 // 8 * 8, context_length=1024,
                      tie_embeddings=True, bos_token_id=tok.eos_id, eos_token_id=tok.eos_id)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Llama(cfg)
    return export_stitched(model, None, out, tokenizer_json=BUILTIN_TOKENIZER.read_text(encoding="utf-8"))
