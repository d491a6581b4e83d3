"""Seed 004: lmplay: train two experiments briefly on the shipped corpus; loss curves and the diff vs the baseline.

Run: lminspect session run lmplay_compare [--quick] [--out DIR] [EXP ...]   (default: gpt2ish llamaish)
The first experiment is the baseline of the diff plot (lmplay's lmp_plotstats view).
"""

import shutil

import lminspect as li
from lminspect.sessions_runner import session
from lminspect.train import TrainConfig, train

s = session("lmplay_compare")
exps = s.args or ["gpt2ish", "llamaish"]
# Same shape and data for every experiment so the curves compare; quick mode is a toy of a toy.
shape = {"n_layer": 2, "dim": 32, "n_head": 2} if s.quick else {"n_layer": 4, "dim": 192, "n_head": 6}
steps, batch, seq = (6, 4, 32) if s.quick else (300, 8, 128)

for exp in exps:
    run_dir = s.path(f"runs/{exp}")
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run each time the session runs
    res = train(TrainConfig(exp=exp, run_dir=str(run_dir), max_steps=steps, batch_size=batch, seq_len=seq,
                            eval_every=max(steps // 3, 1), eval_batches=1 if s.quick else 4, save_every=0,
                            model_args=shape, seed=0, progress=False))
    s.log(f"{exp}: {res.step} steps, {res.tokens} tokens, last loss {res.losses[-1]:.3f}")

# Compare: the runs table, the loss curves, and every run minus the baseline.
runs = li.runs(s.out / "runs")
s.write_table("runs", runs.table())
s.write_text("loss.txt", runs.plot("loss", width=100, height=25).text)
s.write_text("loss_diff.txt", runs.diff(baseline=exps[0], metric="loss", width=100, height=25).text)
s.write_text("val_loss.txt", runs.plot("val_loss", width=100, height=25).text)
s.write_json("summary.json", {r.name: {"steps": len(r), "tokens": r.tokens, "last": r.last} for r in runs})
s.log("wrote", len(s.files), "files to", s.out)
