"""Training loop: stats, checkpoints, exact resume, NaN stop, Ctrl-C, plans, data sources."""

from __future__ import annotations

import json

import pytest

from lminspect.errors import UserError
from lminspect.train import TrainConfig, load_run, train

TINY = {"n_layer": 2, "dim": 32, "n_head": 2}


def cfg(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(exp="gpt2ish", run_dir=str(tmp_path / name), batch_size=4, mini_batch_size=2, seq_len=32,
                max_steps=6, eval_every=3, save_every=2, model_args=dict(TINY), optimizer="adamw", lr=3e-3,
                progress=False)
    base.update(kw)
    return TrainConfig(**base)


def test_train_writes_run_dir(tmp_path):
    res = train(cfg(tmp_path))
    assert res.status == "done" and res.step == 6 and res.tokens == 6 * 4 * 32
    assert res.losses[-1] < res.losses[0]
    run = load_run(tmp_path / "run")
    assert run.status == "done" and not run.is_running
    assert run.columns["step"] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "acc", "lr", "grad_norm", "tok_s", "time", "tokens"):
        assert key in run.columns
    xs, ys = run.series("val_loss", "step")
    assert xs == [3, 6] and all(y > 0 for y in ys)
    conf = json.loads((tmp_path / "run" / "config.json").read_text())
    assert conf["train"]["seq_len"] == 32 and conf["experiment"] == "gpt2ish"
    ck = res.checkpoint
    assert ck.name == "step_0000006" and (ck / "model.safetensors").is_file()
    assert len(list((tmp_path / "run" / "checkpoints").glob("step_*"))) == 2  # keep_checkpoints


def test_checkpoint_is_a_model_dir(tmp_path):
    res = train(cfg(tmp_path, max_steps=2))
    from safetensors import safe_open

    with safe_open(str(res.checkpoint / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "embed.tokens.weight" in keys and "layers.1.mlp.down.weight" in keys
    assert not any(k.startswith(("model/", "optim/")) for k in keys)
    conf = json.loads((res.checkpoint / "config.json").read_text())
    assert conf["lminspect_arch"] == "gpt2" and conf["n_layer"] == 2
    import torch

    import lminspect as li
    from lminspect.models import load_model
    from lminspect.weights import open_store

    store = open_store(str(res.checkpoint))
    assert store.arch == "gpt2" and "layers.0.attn.q.weight" in store.canonical_names()
    li.open(str(res.checkpoint))  # the REPL handle browses it too
    model = load_model(str(res.checkpoint))
    ids = torch.tensor([[1, 2, 3, 4]])
    assert model(ids).shape == (1, 4, 4096)


def test_resume_reproduces_uninterrupted_losses(tmp_path):
    full = train(cfg(tmp_path, "full"))

    def stop_at_3(row):
        if row["step"] == 3:
            raise KeyboardInterrupt

    part = train(cfg(tmp_path, "part", save_every=0), on_step=stop_at_3)
    assert part.status == "interrupted" and part.step == 3
    assert part.checkpoint is not None and part.checkpoint.name == "step_0000003"
    assert load_run(tmp_path / "part").status == "interrupted"
    resumed = train(TrainConfig(run_dir=str(tmp_path / "part"), resume=True, progress=False))
    assert resumed.step == 6
    assert part.losses + resumed.losses == full.losses  # bit-exact
    run = load_run(tmp_path / "part")
    assert run.columns["step"] == [1, 2, 3, 4, 5, 6]
    assert run.columns["loss"] == full.losses


def test_resume_drops_stats_after_checkpoint(tmp_path):
    # a crash after step 5 with the last checkpoint at 4: steps 5.. are redone, not duplicated
    def crash(row):
        if row["step"] == 5:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        train(cfg(tmp_path, save_every=2), on_step=crash)
    assert load_run(tmp_path / "run").status == "stopped"
    res = train(TrainConfig(run_dir=str(tmp_path / "run"), resume=True, progress=False))
    assert res.step == 6
    assert load_run(tmp_path / "run").columns["step"] == [1, 2, 3, 4, 5, 6]


def test_nan_loss_stops_and_keeps_checkpoint(tmp_path):
    with pytest.raises(UserError, match="loss is nan"):
        train(cfg(tmp_path, lr=1e30, optimizer="adagrad", max_steps=50))
    ck = tmp_path / "run" / "checkpoints"
    latest = (ck / "latest").read_text().strip() if (ck / "latest").exists() else None
    if latest:
        import math

        from lminspect.train.checkpoint import load_checkpoint

        st = load_checkpoint(ck / latest)
        assert all(math.isfinite(float(v.float().sum())) for v in st["model"].values())
    assert load_run(tmp_path / "run").status == "failed"


def test_existing_run_dir_refused(tmp_path):
    train(cfg(tmp_path, max_steps=1))
    with pytest.raises(UserError, match="already holds a run"):
        train(cfg(tmp_path, max_steps=1))


def test_plan_steps_run_in_order(tmp_path):
    data = tmp_path / "notes.txt"
    data.write_text("\n\n".join(f"Paragraph {i} talks about models and layers." for i in range(200)))
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"name": "two", "steps": [
        {"name": "a", "data": "builtin", "max_tokens": 2 * 4 * 32},
        {"name": "b", "data": str(data), "max_tokens": 3 * 4 * 16, "seq_len": 16},
    ]}))
    res = train(cfg(tmp_path, plan=str(plan), max_steps=None, eval_every=0))
    run = load_run(tmp_path / "run")
    assert res.step == 5
    assert run.columns["plan_step"] == [0, 0, 1, 1, 1]
    assert run.columns["tokens"][-1] == 2 * 128 + 3 * 64


def test_bad_plan_is_user_error(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"steps": [{"data": "builtin", "tokens": 5}]}))
    with pytest.raises(UserError, match="unknown keys"):
        train(cfg(tmp_path, plan=str(plan)))
    with pytest.raises(UserError, match="unknown plan"):
        train(cfg(tmp_path, plan="nope"))


def test_jsonl_data_and_max_tokens(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"Document {i} about tiny language models."}) + "\n"
                            for i in range(300)))
    res = train(cfg(tmp_path, data=str(data), max_steps=None, max_tokens=3 * 128, eval_every=0))
    assert res.step == 3


def test_value_norm_and_llamaish_train(tmp_path):
    for exp, args in (("value_norm", TINY), ("llamaish", {"n_layer": 2, "dim": 48, "n_head": 6})):
        res = train(cfg(tmp_path, exp, exp=exp, model_args=dict(args), max_steps=3, eval_every=0))
        assert res.losses[-1] < res.losses[0]
    from safetensors import safe_open

    ck = tmp_path / "value_norm" / "checkpoints" / "step_0000003"
    with safe_open(str(ck / "model.safetensors"), "pt") as f:
        assert "layers.0.attn.v_norm.weight" in set(f.keys())
    assert json.loads((ck / "config.json").read_text())["lminspect_value_norm"] is True
    # the engine rebuilds the norms from the checkpoint (ignoring them would change every output)
    import torch

    from lminspect.models import load_model

    m = load_model(ck)
    with safe_open(str(ck / "model.safetensors"), "pt") as f:
        saved = f.get_tensor("layers.0.attn.v_norm.weight")
    assert torch.equal(m.layers[0].attn.v_norm.weight, saved)


def test_byte_tokenizer_and_accumulation_equivalence(tmp_path):
    # mini-batches of 1 and of 4 give the same losses (gradient accumulation is exact up to float)
    a = train(cfg(tmp_path, "a", mini_batch_size=1, max_steps=3, eval_every=0))
    b = train(cfg(tmp_path, "b", mini_batch_size=4, max_steps=3, eval_every=0))
    assert a.losses == pytest.approx(b.losses, rel=1e-5)
