"""Seed 002: Frankenllama: skip and repeat decoder layers; generations, multiple-choice table, attention FFT.

Run: lminspect session run frankenllama [--quick] [--out DIR] [MODEL]   (default MODEL: smollm2)
The plans are seed 002's configurations (rescaled from 32 layers to the model's depth);
the multiple-choice set is a HellaSwag-format cloze set built from the shipped corpus.
"""

import numpy as np

import lminspect as li
from lminspect.evals.cloze import builtin_cloze
from lminspect.sessions_runner import session
from lminspect.stitch import load_plans, plan_to_string

PROMPT = "Once upon a time"
s = session("frankenllama")
m = li.open(s.args[0] if s.args else (s.quick_model() if s.quick else "smollm2"))
s.log(m)
n_items, new_tokens = (4, 8) if s.quick else (50, 40)

# The sweep: every seed-002 preset plus the baseline, all views of the same weights (nothing copied).
plans = load_plans("presets", m.n_layers)
items = builtin_cloze(n_items)
sweep = m.sweep(items, plans)  # every plan scored in one pass that shares common layer calls
s.log(sweep.summary())
rows, gens = [], []
for name, plan in plans.items():
    v = m.stitch(plan)
    text = v.generate(PROMPT, max_new_tokens=new_tokens)
    mc = sweep.results[name]
    rows.append({"plan": name, "spec": plan_to_string(plan, m.n_layers), "layer_calls": len(plan),
                 "acc": mc.acc, "acc_norm": mc.acc_norm, "acc_stderr": mc.acc_stderr, "n": mc.n,
                 "gen_tok_s": text.stats.tokens_per_s, "text": " ".join(text.split())[:60]})
    gens.append(f"## {name} ({rows[-1]['spec']})\n\n{PROMPT}{text}\n")
    s.log(f"{name:30s} acc_norm {mc.acc_norm:.2f}  {rows[-1]['text']!r}")
s.write_table("plans", li.Table(rows, title=f"{m.name}: {len(rows)} plans, {n_items} cloze items"))
s.write_text("generations.md", "\n".join(gens))
s.plot_bars("acc_norm_plot.txt", [r["plan"] for r in rows], [r["acc_norm"] for r in rows], title="acc_norm per plan")

# Attention maps of the prompt (baseline and the seed's best plan) and their centred 2-D FFT magnitude.
for name in ("baseline", "skip_near_end_keep_last_two"):
    att = m.stitch(plans[name]).attention(PROMPT)  # [plan positions, heads, T, T]
    s.save_npy(f"attention_{name}.npy", att)
    s.save_npy(f"attention_fft_{name}.npy", np.abs(np.fft.fftshift(np.fft.fft2(att), axes=(-2, -1))))
s.log("wrote", len(s.files), "files to", s.out)
