"""Seed 000: look for structure in the weights: layer norms, spectra, per-head norms, residual-stream statistics.

Run: lminspect session run weight_structure [--quick] [--out DIR] [MODEL]   (default MODEL: smollm2)
"""

import numpy as np

import lminspect as li
from lminspect.evals.cloze import builtin_corpus
from lminspect.sessions_runner import session

s = session("weight_structure")
m = li.open(s.args[0] if s.args else (s.quick_model() if s.quick else "smollm2"))
s.log(m)
L = m.n_layers
MATS = [c for c in ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down") if f"layers.0.{c}" in m]

# 1. Statistics of every tensor in every block (moments, kurtosis, stable/effective rank, power-law alpha).
s.write_table("tensor_stats", m.stats("layers.*"))

# 2. Frobenius norm of each matrix per layer: an array [layers, matrices], a table and a text plot.
norms = np.array([[m[f"layers.{i}.{c}"].norm() for c in MATS] for i in range(L)])
s.save_npy("layer_norms.npy", norms)
s.write_table("layer_norms", li.Table([{"layer": i, **dict(zip(MATS, map(float, r), strict=True))} for i, r in enumerate(norms)]))
s.plot_lines("layer_norms_plot.txt", {c: norms[:, j] for j, c in enumerate(MATS)}, title="Frobenius norm", xlabel="layer")

# 3. Singular-value spectra (cached with the stats): one [layers, min(out, in)] array per matrix kind.
for c in MATS:
    s.save_npy(f"spectrum_{c}.npy", np.array([m[f"layers.{i}.{c}"].stats()["singular_values"] for i in range(L)]))

# 4. Per-head norms of the attention projections: [layers, heads] each (q/k/v rows, o columns of one head).
for p in "qkvo":
    heads = [m.layers[i].attn[p].heads() for i in range(L)]
    s.save_npy(f"head_norms_{p}.npy", np.array([np.linalg.norm(h.reshape(h.shape[0], -1), axis=1) for h in heads]))

# 5. The residual stream over many tokens of the shipped corpus (seed 000 traced tiny-lessons the same way):
#    per layer and per dimension, streamed sums of x, x^2, x^4 over windows of the token stream.
seq, n_win = (64, 2) if s.quick else (256, 16)
ids = m.encode(builtin_corpus().read_text(encoding="utf-8")[: 200_000])[: seq * n_win]
dim = m.config.get("hidden_size") or m.config.get("n_embd")
s1, s2, s4 = (np.zeros((L, dim)) for _ in range(3))
for w in range(0, len(ids) - seq + 1, seq):
    acts = m.run_with_cache(ids[w : w + seq], sites=["resid_out"])
    x = np.stack([acts[f"resid_out.{i}"] for i in range(L)]).astype(np.float64)  # [L, T, d]
    s1 += x.sum(1)
    s2 += (x**2).sum(1)
    s4 += (x**4).sum(1)
n = (len(ids) // seq) * seq
mean, ms = s1 / n, s2 / n
s.save_npy("resid_dim_rms.npy", np.sqrt(ms))  # [layers, d]: outlier dimensions stand out
rows = []
for i in range(L):
    mu, var = mean[i].mean(), ms[i].mean() - mean[i].mean() ** 2
    rms = np.sqrt(ms[i])
    rows.append({"layer": i, "tokens": n, "mean": float(mu), "std": float(np.sqrt(max(var, 0))),
                 "rms": float(np.sqrt(ms[i].mean())), "kurtosis_dims": float(np.mean(s4[i] / n / np.maximum(ms[i], 1e-30) ** 2) - 3),
                 "top_dim": int(rms.argmax()), "top_dim_rms_ratio": float(rms.max() / np.median(rms))})
s.write_table("resid_stats", li.Table(rows))
s.plot_lines("resid_rms_plot.txt", {"rms": [r["rms"] for r in rows], "top dim / median": [r["top_dim_rms_ratio"] for r in rows]},
             title="residual stream by layer", xlabel="layer")
s.log("wrote", len(s.files), "files to", s.out)
