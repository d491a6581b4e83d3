"""The ``growing`` experiment: growth events during one run, loss continuity, resume, FLOPs column."""

from __future__ import annotations

import json

import pytest

from lminspect.train import TrainConfig, load_run, train

pytest.importorskip("torch")

TOK = 4 * 32  # tokens per step below
SCHED = {"events": [{"tokens": 3 * TOK, "layers": 1}, {"tokens": 5 * TOK, "width": 64, "ffn": 192}],
         "old_lr_scale": 0.5}


def cfg(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(exp="growing", run_dir=str(tmp_path / name), batch_size=4, seq_len=32, max_steps=7,
                eval_every=0, save_every=0, optimizer="adamw", lr=3e-3, progress=False,
                model_args={"n_layer": 1, "dim": 32, "n_head": 4, "schedule": SCHED})
    base.update(kw)
    return TrainConfig(**base)


def test_growth_keeps_loss_and_grows(tmp_path):
    res = train(cfg(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    grown = [r for r in rows if "growth" in r]
    assert [r["step"] for r in grown] == [3, 5]
    for r in grown:  # same batch, just before vs just after the growth
        assert abs(r["growth_loss_after"] - r["growth_loss_before"]) < 1e-4
    # the next training step's loss stays close to the previous one (no spike from growth)
    by_step = {r["step"]: r["loss"] for r in rows}
    for r in grown:
        assert abs(by_step[r["step"] + 1] - by_step[r["step"]]) < 0.3
    assert grown[1]["n_params"] > grown[0]["n_params"]
    conf = json.loads((res.checkpoint / "config.json").read_text())
    assert conf["num_hidden_layers"] == 2 and conf["hidden_size"] == 64 and conf["lminspect_arch"] == "llama"
    flops = [r["flops"] for r in rows]
    assert all(b > a for a, b in zip(flops, flops[1:], strict=False))
    # FLOPs per step grow with the model
    assert flops[6] - flops[5] > flops[1] - flops[0]
    run = load_run(tmp_path / "run")
    xs, _ = run.series("loss", "flops")
    assert len(xs) == 7


def test_growth_param_groups_and_resume(tmp_path):
    full = train(cfg(tmp_path, "full"))

    def stop(row):
        if row["step"] == 4:
            raise KeyboardInterrupt

    part = train(cfg(tmp_path, "part"), on_step=stop)
    assert part.step == 4
    resumed = train(TrainConfig(run_dir=str(tmp_path / "part"), resume=True, progress=False))
    assert resumed.step == 7
    assert part.losses + resumed.losses == pytest.approx(full.losses, abs=1e-5)


def test_growth_generations_lr():
    from lminspect.experiments.builtin import make_llamaish
    from lminspect.grow.schedule import GrowthController

    ctl = GrowthController([{"tokens": 1, "layers": 1}], old_lr_scale=0.5)
    model = make_llamaish(300, 16, n_layer=1, dim=32, n_head=4)
    model = ctl.replay(model, 1)
    groups = ctl.param_groups(model, 1.0)
    assert [g["generation"] for g in groups] == [1, 0] and [g["lr"] for g in groups] == [1.0, 0.5]
    new_names = {n for n, p in model.named_parameters() if any(p is q for q in groups[0]["params"])}
    assert new_names and all(n.startswith("layers.1.") for n in new_names)


def test_bad_schedule(tmp_path):
    from lminspect.errors import UserError

    with pytest.raises(UserError, match="schedule"):
        train(cfg(tmp_path, model_args={"n_layer": 1, "dim": 32, "n_head": 4, "schedule": "{nope"}))
    with pytest.raises(UserError, match="unknown key"):
        train(cfg(tmp_path, "b", model_args={"n_layer": 1, "dim": 32, "n_head": 4,
                                              "schedule": [{"tokens": 1, "depth": 2}]}))
