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
    return body[:-1] + b', "' + KEY.encode() + b'": "' + _of(body).encode() + b'"}'


def sealed(line: bytes) -> bool:
    """The line is one `seal` wrote, unchanged since."""
    line = line.rstrip()
    m = _TAIL.fullmatch(line[-_TAIL_LEN:])
    return m is not None and _of(line[:-_TAIL_LEN] + b"}") == m.group(1).decode()


def changed(files: list[Path]) -> list[str]:
    """`file:line` of every record line not as modelopt wrote it (edited since, or written by
    something else); a torn last line, which readers skip, is not one."""
    out = []
    for p in files:
        raw = read_own(p)
        lines = raw.split(b"\n")
        for i, line in enumerate(lines, 1):
            torn = i == len(lines) and not raw.endswith(b"\n")
            if line.strip() and not torn and not sealed(line):
                out.append(f"{p}:{i}")
    return out


def blame(files: list[Path], exc: Exception) -> str:
    """What to say where results passed the record's checks but a reader failed on them
    (`exc`): the lines to look at where some were changed since modelopt wrote them. Where
    every line is as written, the fault is modelopt's: that is said and `exc` raised, its
    traceback for the bug report."""
    what = f"{type(exc).__name__}: {str(exc)[:200]}"
    lines = changed(files)
    if not lines:
        print(f"modelopt: error: every line of {', '.join(map(str, files))} is as modelopt "
              f"wrote it, yet it could not be read ({what}): a bug in modelopt; please "
              "report it with the traceback below", file=sys.stderr)
        raise exc
    more = f" and {len(lines) - 3} more" if len(lines) > 3 else ""
    return (f"{', '.join(lines[:3])}{more}: not as modelopt wrote {'them' if len(lines) > 1 else 'it'}"
            f" (edited, or made elsewhere), and the results hold something modelopt does not "
            f"write ({what})")
