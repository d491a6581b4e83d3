"""Agreement (and time) against the peers on the real SmolLM2, in one run.

- ``--ww``: weightwatcher's ``analyze()`` vs lminspect's ``stats`` alpha on every matrix
  weightwatcher analyses (HF names; a tied ``lm_head`` is not stored): how many agree to
  3e-6 (alpha) with the same tail (``num_pl_spikes`` == ``alpha_tail``), the worst relative
  difference, and each side's seconds (lminspect with its stats cache off).
- ``--mergekit``: ``mergekit``'s ``run_merge`` vs ``lminspect.stitch.export_stitched`` on a few
  passthrough configs: tensors compared bit for bit (dtype included), seconds of each.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_peers_agreement.py --ww --mergekit
Needs the ``peers`` extra (weightwatcher, mergekit) and ``lminspect fetch smollm2``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path


def bench_ww(model_dir: Path) -> None:
    import weightwatcher as ww
    from transformers import AutoModelForCausalLM

    from lminspect.weights import open_store
    from lminspect.weights.stats import tensor_stats

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32").eval()
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    t = time.perf_counter()
    rows = ww.WeightWatcher(model=model).analyze().to_dict("records")
    t_ww = time.perf_counter() - t
    store = open_store(model_dir)
    t = time.perf_counter()
    n = agree = 0
    worst = (0.0, "")
    for row in rows:
        name = row["longname"] + ".weight"
        if name not in store:
            continue
        r = tensor_stats(store, name, use_cache=False)
        n += 1
        rel = abs(r["alpha"] - row["alpha"]) / max(1.0, abs(row["alpha"]))
        worst = max(worst, (rel, name))
        agree += rel <= 3e-6 and r["alpha_tail"] == row["num_pl_spikes"]
    t_li = time.perf_counter() - t
    print(f"alpha: {agree}/{n} matrices agree (worst relative difference {worst[0]:.2g} at {worst[1]}); "
          f"weightwatcher {t_ww:.1f} s, lminspect {t_li:.1f} s")


def _configs(d: str) -> dict[str, dict]:
    return {
        "skip_repeat": {"merge_method": "passthrough", "dtype": "float32", "slices": [
            {"sources": [{"model": d, "layer_range": [0, 24]}]}, {"sources": [{"model": d, "layer_range": [20, 30]}]}]},
        "filters_gradient_top": {"merge_method": "passthrough", "parameters": {"scale": 0.9}, "slices": [
            {"sources": [{"model": d, "layer_range": [0, 16], "parameters": {"scale": [
                {"filter": "o_proj", "value": 0.5}, {"filter": "down_proj", "value": [1.0, 0.5]}, {"value": 1.0}]}}]},
            {"sources": [{"model": d, "layer_range": [14, 30]}]}]},
        "models_bf16": {"merge_method": "passthrough", "dtype": "bfloat16",
                        "models": [{"model": d, "parameters": {"scale": 0.7}}]},
    }


def bench_mergekit(model_dir: Path) -> None:
    import torch
    import yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    from safetensors.torch import load_file

    from lminspect.models import load_model
    from lminspect.stitch import export_stitched, parse_plan

    lm = load_model(str(model_dir))
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in _configs(str(model_dir)).items():
            out = Path(tmp) / name
            t = time.perf_counter()
            run_merge(MergeConfiguration.model_validate(cfg), str(out / "mk"),
                      options=MergeOptions(copy_tokenizer=False, lazy_unpickle=False, quiet=True))
            t_mk = time.perf_counter() - t
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            t = time.perf_counter()
            export_stitched(lm, parse_plan(path, lm.n_layers), out / "li")
            t_li = time.perf_counter() - t
            a, b = load_file(out / "mk" / "model.safetensors"), load_file(out / "li" / "model.safetensors")
            same = sum(k in b and a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)
            print(f"mergekit {name}: {same}/{len(a)} tensors bit-equal ({len(b)} written by lminspect); "
                  f"mergekit {t_mk:.1f} s, lminspect {t_li:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ww", action="store_true", help="weightwatcher's alpha on every matrix")
    ap.add_argument("--mergekit", action="store_true", help="stitch export vs mergekit on a few configs")
    args = ap.parse_args()
    from lminspect.weights.fetch import fetch

    model_dir = fetch("smollm2").hf_dir
    if args.ww:
        bench_ww(model_dir)
    if args.mergekit:
        bench_mergekit(model_dir)


if __name__ == "__main__":
    main()
