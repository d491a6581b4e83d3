"""The training step's fast paths give the plain path's results: the one-pass head loss
(lminspect.train.head_loss) and torch's fused optimizers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lminspect.train import TrainConfig, train
from lminspect.train import head_loss as hl

TINY = {"n_layer": 2, "dim": 32, "n_head": 2}


@pytest.mark.parametrize("chunk_bytes", [1 << 23, 4 * 37 * 3])  # one chunk; 3 rows a chunk, a ragged last one
def test_head_loss_matches_cross_entropy(monkeypatch, chunk_bytes):
    monkeypatch.setattr(hl, "_CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(0)
    h = torch.randn(2, 5, 16, requires_grad=True)
    w = torch.randn(37, 16, requires_grad=True)
    y = torch.randint(0, 37, (2, 5))
    y[0, 0] = torch.argmax(h[0, 0] @ w.t())  # at least one correct guess
    logits = h @ w.t()
    ref = F.cross_entropy(logits.reshape(-1, 37), y.reshape(-1))
    ref_correct = int((logits.argmax(-1) == y).sum())
    (ref * 3).backward()
    ref_grads = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    loss, correct = hl.head_loss(h, w, y)
    (loss * 3).backward()
    assert int(correct) == ref_correct >= 1
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(h.grad, ref_grads[0])
    torch.testing.assert_close(w.grad, ref_grads[1])


def test_head_loss_reuses_its_buffer_only_when_free():
    """The logits buffer comes back after a backward; two graphs alive at once never share it."""
    torch.manual_seed(1)
    h = torch.randn(6, 8, requires_grad=True)
    w = torch.randn(11, 8, requires_grad=True)
    ys = torch.randint(0, 11, (6,)), torch.randint(0, 11, (6,))
    ref = [F.cross_entropy(h @ w.t(), y) for y in ys]
    hl.release_buffers()
    a, _ = hl.head_loss(h, w, ys[0])
    b, _ = hl.head_loss(h, w, ys[1])  # a's graph still holds its buffer
    torch.testing.assert_close(torch.stack([a, b]), torch.stack(ref))
    gh, gw = torch.autograd.grad(a + b, (h, w))
    rh, rw = torch.autograd.grad(ref[0] + ref[1], (h, w))
    torch.testing.assert_close(gh, rh)
    torch.testing.assert_close(gw, rw)
    assert len(hl._spare) == 1  # one buffer kept (the other was dropped), reused by the next step
    kept = next(iter(hl._spare.values()))
    c, _ = hl.head_loss(h, w, ys[0])
    assert not hl._spare and c.grad_fn is not None
    torch.testing.assert_close(c, ref[0])
    c.backward()
    assert next(iter(hl._spare.values())) is kept
    hl.release_buffers()


def test_plain_head_only_for_plain_models():
    from lminspect.experiments.builtin import make_gpt2ish, make_value_norm
    from lminspect.models import GPT2

    model = make_gpt2ish(64, 16, **TINY)
    assert hl.plain_head(model) is model.embed.tokens.weight
    assert hl.plain_head(make_value_norm(64, 16, **TINY)) is not None  # the norm sits inside the blocks

    class Custom(GPT2):
        def forward(self, input_ids, **kw):
            return super().forward(input_ids, **kw) * 2

    assert hl.plain_head(Custom(model.config)) is None
    with model.hooks(lambda name, t: None):
        assert hl.plain_head(model) is None
    ids = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(F.linear(hl.hidden_states(model, ids), model.embed.tokens.weight), model(ids))


def _run(tmp_path, name, **kw):
    cfg = TrainConfig(exp="gpt2ish", run_dir=str(tmp_path / name), batch_size=4, mini_batch_size=2, seq_len=32,
                      max_steps=4, eval_every=0, save_every=0, model_args=dict(TINY), lr=3e-3, progress=False,
                      **kw)
    res = train(cfg)
    from lminspect.train.checkpoint import load_checkpoint

    return res.losses, load_checkpoint(res.checkpoint)["model"]


@pytest.mark.parametrize("optimizer", ["adamw", "adagrad"])
def test_fast_step_matches_plain_step(tmp_path, monkeypatch, optimizer):
    """The fused head loss and the fused optimizer train as the plain cross-entropy and for-loop optimizer."""
    fast_losses, fast = _run(tmp_path, "fast", optimizer=optimizer, grad_clip=1.0, weight_decay=0.1)
    import lminspect.train.loop as loop

    monkeypatch.setattr(hl, "plain_head", lambda model: None)
    real = loop._make_optimizer

    def plain_optimizer(name, params, lr, wd):
        opt = real(name, params, lr, wd)
        assert all(g["fused"] for g in opt.param_groups)  # the fast run used the fused step
        for g in opt.param_groups:
            g["fused"] = None
        return opt

    monkeypatch.setattr(loop, "_make_optimizer", plain_optimizer)
    plain_losses, plain = _run(tmp_path, "plain", optimizer=optimizer, grad_clip=1.0, weight_decay=0.1)
    assert fast_losses == pytest.approx(plain_losses, rel=1e-5)
    for k in plain:
        if k.endswith("attn.k.bias"):  # its true gradient is 0 (softmax ignores a shift shared by all keys):
            continue  # rounding noise, which Adagrad scales up to +-lr whatever its size
        # Adam and Adagrad divide by the gradient's own size, so a single element whose gradient
        # nearly cancels can move by a sizeable part of lr on rounding alone: bound the whole
        # tensor's difference tightly and each element by a small share of the 4 steps' lr
        diff = fast[k] - plain[k]
        assert float(diff.norm()) <= 1e-4 * float(plain[k].norm()) + 1e-7, k
        assert float(diff.abs().max()) <= 0.05 * 3e-3, k


def test_bf16_on_a_cpu_without_native_bf16_warns_and_tracks_float32(tmp_path, monkeypatch, capsys):
    import lminspect.train.guard as guard

    monkeypatch.setattr(guard, "cpu_has_bf16", lambda: False)
    bf16, _ = _run(tmp_path, "bf16", optimizer="adamw", amp="bf16", device="cpu")
    assert "--amp bf16 on a CPU without AVX512-BF16/AMX" in capsys.readouterr().err
    fp32, _ = _run(tmp_path, "fp32", optimizer="adamw", amp="none", device="cpu")
    assert "AVX512-BF16" not in capsys.readouterr().err
    assert bf16 == pytest.approx(fp32, rel=0.05)  # the loss curve follows float32's
