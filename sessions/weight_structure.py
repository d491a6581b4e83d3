"""Seed 000: look for structure in the weights: layer norms, spectra, per-head norms, residual-stream statistics.

Run: lminspect session run weight_structure [--quick] [--out DIR] [MODEL]   (default MODEL: smollm2)
"""

import numpy as np

import lminspect as li
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

# 5. The residual stream over many tokens (seed 000 traced tiny-lessons the same way): lminspect.activations
#    streams per-dimension moments, outlier ("massive activation") dims and histograms in one pass.
from lminspect.activations import collect  # noqa: E402

tokens, seq = (256, 64) if s.quick else (50_000, 256)
acts = collect(m.store, s.path("activations"), tokens=tokens, seq_len=seq, batch_size=4, sites=["resid_out"],
               overwrite=True, progress=False)
sites = [acts[f"resid_out.{i}"] for i in range(L)]
s.write_table("resid_stats", li.Table([st.summary() for st in sites], title=f"residual stream, {tokens} tokens"))
s.save_npy("resid_dim_std.npy", np.stack([st.std for st in sites]))  # [layers, d]: outlier dims stand out
s.save_npy("resid_dim_kurtosis.npy", np.stack([st.excess_kurtosis for st in sites]))
s.plot_lines("resid_plot.txt", {"std": [st.site_std for st in sites], "absmax": [float(st.absmax.max()) for st in sites]},
             title="residual stream by layer (li.activations(DIR) reloads it)", xlabel="layer")
s.log("wrote", len(s.files), "files to", s.out)
