"""How corpus.txt and tokenizer.json were made (run from the repo root; the output is committed).

corpus.txt: docstrings (>= 200 chars, mostly letters) of the CPython standard library, documents
separated by two blank lines, cut at ~1.6 MB. tokenizer.json: byte-level BPE, vocab 4096.
"""

import ast
import pathlib
import sysconfig

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

OUT = pathlib.Path("lminspect/data/train_corpus")


def build_corpus() -> str:
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    docs, seen = [], set()
    skip = ("test", "site-packages", "idlelib", "lib2to3", "turtledemo", "encodings")
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root).as_posix()
        if any(p in rel for p in skip):
            continue
        try:
            tree = ast.parse(f.read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                d = ast.get_docstring(node)
                if not d or len(d) < 200:
                    continue
                d = d.strip()
                letters = sum(c.isalpha() or c == " " for c in d) / len(d)
                if letters < 0.85 or d in seen:
                    continue
                seen.add(d)
                docs.append(d)
    text = "\n\n\n".join(docs)[:1_600_000]
    return text[: text.rfind("\n\n\n")] + "\n"


def build_tokenizer(text: str) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(text.split("\n\n\n"), trainer=trainer)
    return tok


if __name__ == "__main__":
    corpus = build_corpus()
    (OUT / "corpus.txt").write_text(corpus, encoding="utf-8")
    build_tokenizer(corpus).save(str(OUT / "tokenizer.json"))
