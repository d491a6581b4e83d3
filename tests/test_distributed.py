"""Under torchrun: the shared helpers, ``eval_mc`` sharded over two real gloo processes."""

from __future__ import annotations

import json

import pytest

from lminspect import distributed
from lminspect.evals.mc import MCItem

ITEMS = [
    MCItem("Once upon a time there was a little model that read books.", ["It slept.", "The end of it all.", "x"], 0),
    MCItem("The weights were small but", ["the stories were long.", "a layer.", "model model model"], 2),
    MCItem("Every layer added", ["a little more meaning.", "books", "time"], 1),
    MCItem("In the end the model could", ["finish a sentence.", "read", "sleep all day long"], 0, id="last"),
]

EVAL_SCRIPT = """
import json, os, sys
import lminspect as li
from lminspect.evals.mc import MCItem
items = [MCItem(**d) for d in json.load(open(sys.argv[2]))]
res = li.open(sys.argv[1]).eval_mc(items)
if os.environ["RANK"] == "0":
    json.dump({"lls": [s.lls for s in res.items], "acc": res.acc, "acc_norm": res.acc_norm,
               "acc_norm_stderr": res.acc_norm_stderr, "n": res.n, "tokens": res.tokens}, open(sys.argv[3], "w"))
"""


def test_one_process_helpers_need_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert distributed.join() == (0, 1, False) and distributed.is_main()
    assert distributed.shard(7, 1, 3) == [1, 4]
    assert distributed.gather_in_order([2, 0], ["c", "a"], 3, 1) == ["a", None, "c"]
    assert distributed.sum_over_ranks([1, 2.5], 1) == [1.0, 2.5]
    assert distributed.on_main(lambda: 5, 0, 1) == 5


def test_eval_mc_under_torchrun_matches_one_process(tiny_llama_dir, tmp_path, torchrun):
    """Items 0, 2 on rank 0 and 1, 3 on rank 1; the gathered result equals one process's."""
    import lminspect as li

    one = li.open(str(tiny_llama_dir)).eval_mc(list(ITEMS))
    script, items, out = tmp_path / "eval.py", tmp_path / "items.json", tmp_path / "two.json"
    script.write_text(EVAL_SCRIPT)
    items.write_text(json.dumps([{"ctx": i.ctx, "endings": i.endings, "label": i.label, "id": i.id} for i in ITEMS]))
    r = torchrun([str(script), str(tiny_llama_dir), str(items), str(out)])
    assert r.returncode == 0, r.stderr[-2000:]
    two = json.loads(out.read_text())
    assert two["n"] == 4 and two["tokens"] == one.tokens  # summed over ranks: each item scored once
    for a, b in zip([s.lls for s in one.items], two["lls"], strict=True):
        assert a == pytest.approx(b, abs=1e-5)
    assert (two["acc"], two["acc_norm"]) == (one.acc, one.acc_norm)
    assert two["acc_norm_stderr"] == pytest.approx(one.acc_norm_stderr)
