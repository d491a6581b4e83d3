"""How corpus.txt and tokenizer.json were made (run from the repo root; output is committed)."""

import ast, pathlib, sysconfig, re
root = pathlib.Path(sysconfig.get_paths()["stdlib"])
docs = []
seen = set()
for f in sorted(root.rglob("*.py")):
    rel = f.relative_to(root).as_posix()
    if any(p in rel for p in ("test", "site-packages", "idlelib", "lib2to3", "turtledemo", "encodings")):
        continue
    try:
        tree = ast.parse(f.read_text(encoding="utf-8"))
    except Exception:
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
text = "\n\n\n".join(docs)
text = text[:1_600_000]
text = text[: text.rfind("\n\n\n")]
pathlib.Path("lminspect/data/train_corpus/corpus.txt").write_text(text + "\n", encoding="utf-8")
print(len(docs), len(text))

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
text = open("lminspect/data/train_corpus/corpus.txt", encoding="utf-8").read()
docs = text.split("\n\n\n")
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=["<|endoftext|>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
tok.train_from_iterator(docs, trainer=trainer)
tok.save("lminspect/data/train_corpus/tokenizer.json")
print(tok.get_vocab_size(), len(tok.encode(text).ids))
