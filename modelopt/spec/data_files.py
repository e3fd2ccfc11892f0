"""What a dataset read from this machine's files was: a fingerprint of each file or folder
its parameters name. Not part of a cell's id: the same cell on changed
data is still the cell `compare` pairs, and says so. Part of the suite's content hash, so a
results directory never resumes over data that changed, and recorded with every result.

A file's fingerprint is its content's sha256. A folder's (an image folder, IDX files) is
the sha256 of its files' relative paths and sizes: reading every image at every load would
cost minutes, and images added, removed, moved between classes or re-encoded change it."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path, PurePath

from modelopt.spec.weights import sha256


def of_dataset(spec: dict) -> dict[str, str]:
    """{parameter: fingerprint} for each of a dataset's parameters that names an existing
    file or folder (`path`, `root`, a tokenizer.json; a plugin dataset's too)."""
    out = {}
    for param, value in sorted(spec.items()):
        if param != "name" and isinstance(value, str) and value:
            found = fingerprint(str(Path(value).expanduser().resolve()))
            if found:
                out[param] = found
    return out


def fingerprint(path: str) -> str | None:
    p = Path(path)
    if p.is_file():
        stat = p.stat()
        return _file(path, stat.st_size, stat.st_mtime_ns)
    if p.is_dir():
        return _folder(path)
    return None


@functools.lru_cache(maxsize=256)
def _file(path: str, size: int, mtime_ns: int) -> str:  # size and time: a rewrite is re-read
    return "sha256:" + sha256(path)[:16]


MAX_FILES = 200_000  # a larger folder is fingerprinted by its first files, in name order


@functools.lru_cache(maxsize=64)
def _folder(path: str) -> str:
    """Linked folders followed (ImageFolder reads through them), each once; hidden files
    (.DS_Store) left out, as the datasets leave them."""
    listing, seen = [], set()
    for root, dirs, files in os.walk(path, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            full = os.path.join(root, name)
            listing.append((os.path.relpath(full, path), os.path.getsize(full)))
            if len(listing) == MAX_FILES:  # every cell's process reads it: seconds, not minutes
                break
        if len(listing) == MAX_FILES:
            break
    digest = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    return f"files:{len(listing)}:{digest[:16]}"


def changes(base: dict[str, str], cur: dict[str, str], base_code: str | None,
            cur_code: str | None, dataset: dict, *, lead: str = "", sep: str = "") -> list[str]:
    """Each input a cell read differently in two runs, as a phrase: a file its dataset names
    ("{lead}path (t.csv){sep} old → new", by the print each run recorded) and the user's
    plugin code (spec/plugins.code_of). Resume's refusal and compare's note both say it."""
    out = [f"{lead}{k} ({PurePath(str(dataset.get(k, ''))).name or '?'}){sep} "
           f"{base.get(k, '–')} → {cur.get(k, '–')}"
           for k in sorted(set(base) | set(cur)) if base.get(k) != cur.get(k)]
    if base_code != cur_code:
        out.append(f"your plugins' code {base_code or '–'} → {cur_code or '–'}")
    return out
