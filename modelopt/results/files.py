"""Reading and writing the small JSON files of a results directory as data: validated on
read (a malformed file is an error naming the file and line, never a traceback), written
whole or not at all."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)


class ResultsError(ValueError):
    """A results file that cannot be read or written; the message names the file (and line)."""


def read_json(path: str | Path, model: type[T]) -> T:
    """`path` parsed and validated as `model`."""
    p = Path(path)
    try:
        doc = json.loads(p.read_bytes())
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{p}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})") \
            from None
    except (OSError, UnicodeDecodeError, RecursionError) as exc:
        raise ResultsError(f"{p}: cannot be read ({type(exc).__name__}: {exc})") from None
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "the document"
        raise ResultsError(f"{p}:1: not a {model.__name__} file ({where}: {first['msg']})") \
            from None


def _linked(p: Path) -> ResultsError:
    return ResultsError(f"{p}: a symbolic link (to {os.readlink(p)}); a results directory's "
                        "files are its own and never followed out of it: remove the link")


def no_links(root: str | Path) -> None:
    """A results directory holds files of its own, never links out of it: a run and `time`
    write into it (the lock, results.jsonl, timing.json, dense/) and `merge` copies from it,
    so a planted symbolic link would send a write, or a copy, to a file elsewhere. Raises
    ResultsError naming the first. (The directory itself may be a link: the user made it.)"""
    for here, dirs, files in os.walk(root):  # os.walk does not follow links into dirs
        for name in dirs + files:
            p = Path(here) / name
            if p.is_symlink():
                raise _linked(p)


def open_own(path: str | Path, flags: int) -> int:
    """os.open of a results directory's file that refuses a symbolic link in its place
    (O_NOFOLLOW), as no_links does, for a link planted after that check."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, 0o644)
    except OSError:
        if Path(path).is_symlink():
            raise _linked(Path(path)) from None
        raise


def write_whole(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename over it: readers see the old file
    or the new one, never a part; a failed write (a full disk) leaves no temporary file."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        with os.fdopen(open_own(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(p)
    except OSError as exc:
        raise ResultsError(f"{p}: could not be written ({exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
