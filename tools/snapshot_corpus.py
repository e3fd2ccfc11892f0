"""Make modelopt/corpora/python_docs.txt.gz: the built-in language-modelling corpus.

The text is the English documentation topics that ship inside the Python interpreter
(`pydoc_data.topics`, what `help("if")` prints), joined in sorted topic order. Its size differs
between Python versions, so modelopt keeps this one snapshot (made with the Python that runs
this script) and checks its sha256 when it loads it. Licence: modelopt/corpora/LICENSE.md.

    .venv/bin/python tools/snapshot_corpus.py   # prints the sha256 to put in techniques/text.py
"""

import gzip
import hashlib
import platform
import pydoc_data.topics as topics
from pathlib import Path

text = "\n\n".join(topics.topics[k].strip() for k in sorted(topics.topics)) + "\n"
out = Path(__file__).resolve().parents[1] / "modelopt" / "corpora" / "python_docs.txt.gz"
with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
    f.write(text.encode("utf-8"))  # mtime 0: the same bytes every time
print(f"Python {platform.python_version()}: {len(text)} characters, "
      f"sha256 {hashlib.sha256(text.encode('utf-8')).hexdigest()}, {out.stat().st_size} bytes")
