"""Whether a results line is as modelopt wrote it: each line `store.append` writes ends with
a digest of the text before it. When report or export cannot read results that passed the
record's checks, this tells the user's edited (or foreign) line from a bug of ours. A check
against accidents, not a signature: anyone can write a digest."""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

from modelopt.results.files import read_own

KEY = "digest"  # the last key of every line modelopt writes
_TAIL = re.compile(rb', "digest": "([0-9a-f]{16})"}')
_TAIL_LEN = 31  # its length: the digest's 16 hex digits and what frames them


def _of(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:16]


def seal(body: bytes) -> bytes:
    """A record's JSON text (an object, without the digest) with its digest as the last key."""
    return _ending(body, _of(body))


def _ending(body: bytes, value: str) -> bytes:
    """`body`, a JSON object's text, with `"digest": value` as its last key."""
    return body[:-1] + b', "' + KEY.encode() + b'": "' + value.encode() + b'"}'


def line(body: bytes, state: str) -> bytes:
    """The line for a record's JSON text, by the `state` of the line it was read from (a
    record made here is `sealed`): sealed anew; an `edited` one keeps saying so (`merge`
    neither vouches for it nor hides that it was changed); an `unsealed` one stays bare."""
    if state == "sealed":
        return seal(body)
    return _ending(body, "changed") if state == "edited" else body


def sealed(line: bytes) -> bool:
    """The line is one `seal` wrote, unchanged since."""
    return state(line) == "sealed"


def state(line: bytes) -> str:
    """`sealed`; `edited`: it has a digest that is not of its text (changed, or saved again
    by another tool: compacted, keys reordered); `unsealed`: it has none."""
    line = line.strip().removeprefix(b"\xef\xbb\xbf").strip()  # a BOM an editor added too
    m = _TAIL.fullmatch(line[-_TAIL_LEN:])
    if m is not None and _of(line[:-_TAIL_LEN] + b"}") == m.group(1).decode():
        return "sealed"
    return "edited" if b'"' + KEY.encode() + b'":' in line else "unsealed"  # as a key


def changed(files: list[Path]) -> dict[str, list[str]]:
    """`file:line` of every record line not as modelopt wrote it, by how: `edited` since, or
    `unsealed` (written by a modelopt before digests, or by something else); a torn last
    line, which readers skip, is neither."""
    out: dict[str, list[str]] = {"edited": [], "unsealed": []}
    for p in files:
        raw = read_own(p)
        lines = raw.split(b"\n")
        for i, line in enumerate(lines, 1):
            torn = i == len(lines) and not raw.endswith(b"\n")
            if line.strip() and not torn and (how := state(line)) != "sealed":
                out[how].append(f"{p}:{i}")
    return out


def _listed(lines: list[str]) -> str:
    return ", ".join(lines[:3]) + (f" and {len(lines) - 3} more" if len(lines) > 3 else "")


def blame(files: list[Path], exc: Exception) -> str:
    """What to say where results passed the record's checks but a reader failed on them
    (`exc`): the lines changed since modelopt wrote them, or those that carry no digest.
    Where every line is as modelopt wrote it, the fault is modelopt's: that is said and
    `exc` raised, its traceback for the bug report."""
    what = f"{type(exc).__name__}: {str(exc)[:200]}"
    lines = changed(files)
    if lines["edited"]:
        return (f"{_listed(lines['edited'])}: changed since modelopt wrote "
                f"{'them' if len(lines['edited']) > 1 else 'it'}, and the results hold something "
                f"modelopt does not write ({what})")
    if lines["unsealed"]:
        return (f"{_listed(lines['unsealed'])}: the results hold something modelopt does not "
                f"write ({what}), in lines that carry no digest (written by another tool, or a "
                "modelopt before digests: then it may be a bug in modelopt; please report it)")
    print(f"modelopt: error: every line of {', '.join(map(str, files))} carries the digest "
          f"modelopt writes, yet it could not be read ({what}): a bug in modelopt, or lines "
          "made to look like its own (a digest catches accidents; anyone can compute one). "
          "If the results are yours, please report it with the traceback below",
          file=sys.stderr)
    raise exc
