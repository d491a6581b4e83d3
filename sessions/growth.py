"""Seed 003: building babel: train a small llama, grow it mid-run (depth, then width), plot the loss.

Run: lminspect session run growth [--quick] [--out DIR]
A `growing` run (schedule of growth events by tokens) next to a fixed-size baseline of the
starting shape; the growth rows in stats.jsonl show the loss just before / after each event.
"""

import json
import shutil

from lminspect.plots import plot_runs
from lminspect.sessions_runner import session
from lminspect.train import TrainConfig, load_run, train

s = session("growth")
steps, batch, seq = (8, 4, 32) if s.quick else (400, 8, 128)
shape = {"n_layer": 1, "dim": 32, "n_head": 4} if s.quick else {"n_layer": 2, "dim": 128, "n_head": 4}
tok_per_step = batch * seq
# Grow at 1/3 (two identity blocks) and 2/3 (double width + ffn) of the run; older params learn at half lr.
schedule = {"old_lr_scale": 0.5, "events": [
    {"tokens": steps // 3 * tok_per_step, "layers": 2},
    {"tokens": 2 * steps // 3 * tok_per_step, "width": 2 * shape["dim"], "ffn": 6 * shape["dim"]},
]}
s.write_json("schedule.json", schedule)

common = dict(max_steps=steps, batch_size=batch, seq_len=seq, eval_every=max(steps // 4, 1),
              eval_batches=1 if s.quick else 4, save_every=0, optimizer="adamw", lr=1e-3, seed=0,
              progress=False)
for name, exp, args in (("grown", "growing", {**shape, "schedule": schedule}), ("fixed", "llamaish", shape)):
    run_dir = s.path(f"runs/{name}")
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run every time
    res = train(TrainConfig(exp=exp, run_dir=str(run_dir), model_args=dict(args), **common))
    s.log(f"{name}: {res.step} steps, last loss {res.losses[-1]:.3f}")

grown, fixed = load_run(s.path("runs/grown")), load_run(s.path("runs/fixed"))
rows = [json.loads(line) for line in (s.path("runs/grown") / "stats.jsonl").read_text().splitlines()]
events = [{k: r[k] for k in ("step", "tokens", "growth", "n_params", "growth_loss_before", "growth_loss_after")}
          for r in rows if "growth" in r]
s.write_json("growth_events.json", events)  # loss before/after each growth: equal up to rounding
for e in events:
    s.log(f"growth {e['growth']} at step {e['step']}: {e['n_params']:,} params, "
          f"loss {e['growth_loss_before']:.4f} -> {e['growth_loss_after']:.4f}")
s.write_text("loss.txt", plot_runs([grown, fixed], "loss", width=100, height=25, color=False, smooth_n=2))
s.write_text("loss_vs_flops.txt", plot_runs([grown, fixed], "loss", x="flops", width=100, height=25,
                                            color=False, smooth_n=2))
s.write_json("summary.json", {r.name: {"steps": len(r), "last_loss": r.last["loss"], "flops": r.last["flops"]}
                              for r in (grown, fixed)})
s.log("wrote", len(s.files), "files to", s.out)
