"""Seed 001: llama2_prebiasing's durability experiment in small: same data sorted by perplexity vs shuffled.

Run: lminspect session run prebiasing [--quick] [--out DIR]
1. a reference model (a short gpt2ish run) scores every document: batch metadata (parquet);
2. two runs see the same documents, lowest perplexity first vs shuffled;
3. loss curves, their difference, and the saturation view (loss, accuracy, mean ppl seen).
"""

import shutil

from lminspect.metadata.compute import compute_metadata, write_parquet
from lminspect.plots import diff_series, plot_runs, plot_saturation
from lminspect.sessions_runner import session
from lminspect.train import TrainConfig, load_run, train

s = session("prebiasing")
steps, batch, seq, n_docs = (6, 4, 32, 60) if s.quick else (300, 8, 128, None)
shape = {"n_layer": 1, "dim": 32, "n_head": 2} if s.quick else {"n_layer": 4, "dim": 128, "n_head": 4}
common = dict(exp="gpt2ish", batch_size=batch, seq_len=seq, eval_every=max(steps // 3, 1),
              eval_batches=1 if s.quick else 4, optimizer="adamw", lr=1e-3, model_args=shape, progress=False)


def fresh(name):
    shutil.rmtree(s.path(f"runs/{name}"), ignore_errors=True)  # a fresh run each time
    return str(s.path(f"runs/{name}"))


# 1. Reference model: a brief run on the shipped corpus; its checkpoint is a model directory.
ref = train(TrainConfig(run_dir=fresh("reference"), max_steps=max(2, steps // 2), save_every=0, **common))
meta = compute_metadata("builtin", str(ref.checkpoint), limit=n_docs)
meta_path = write_parquet(meta, s.path("metadata.parquet"))
s.log(f"metadata: {len(meta['id'])} documents, ppl {min(meta['ppl']):.1f}..{max(meta['ppl']):.1f}")

# 2. Same documents, two orders; checkpoints record seen_ids.json, stats rows the mean ppl seen.
for name, order_by, order in (("sorted", "ppl", "asc"), ("shuffled", None, "shuffle")):
    res = train(TrainConfig(run_dir=fresh(name), max_steps=steps, save_every=max(steps // 3, 1), seed=0,
                            order_by=order_by, order=order, metadata=str(meta_path), **common))
    s.log(f"{name}: last loss {res.losses[-1]:.3f}")

# 3. Curves, the diff (sorted - shuffled) and the saturation view side by side.
runs = [load_run(s.path("runs/sorted")), load_run(s.path("runs/shuffled"))]
s.write_text("loss.txt", plot_runs(runs, "loss", width=100, height=25, color=False))
s.write_text("loss_diff.txt", plot_runs(runs, "loss", diff=True, baseline="shuffled", width=100, height=25,
                                        color=False))
s.write_text("saturation.txt", plot_saturation(runs, width=150, height=22, color=False))
xs, ds = diff_series(runs, "loss", baseline="shuffled")["sorted"]
s.write_json("summary.json", {
    "final_loss": {r.name: r.last["loss"] for r in runs},
    "final_val_loss": {r.name: r.last.get("val_loss") for r in runs},
    "mean_ppl_seen": {r.name: r.last.get("seen_ppl") for r in runs},
    "loss_diff_sorted_minus_shuffled": {"tokens": xs, "diff": ds},
})
s.log("wrote", len(s.files), "files to", s.out)
