"""Clean the EB1911 'Shakespeare' article OCR text into documents (one per scanned column)."""
import re, sys
src = open(sys.argv[1], encoding="utf-8").read()
pages = re.split(r"### START: .*?###", src)[1:]
docs = []
for p in pages:
    p = p.split("### END")[0]
    lines = [ln for ln in p.splitlines() if not ln.startswith("####") and not re.match(r"^p\.\d+:\d+\s*$", ln)]
    text = "\n".join(lines)
    text = re.sub(r"(\w)-\n(\w)", r"\1\2", text)   # re-join words hyphenated at line ends
    text = re.sub(r"--", "-", text)
    text = re.sub(r"\s*\n\s*", " ", text).strip()
    text = re.sub(r"\s{2,}", " ", text)
    if len(text) > 200:
        docs.append(text)
open(sys.argv[2], "w", encoding="utf-8").write("\n\n\n".join(docs) + "\n")
print(len(docs), sum(map(len, docs)))
