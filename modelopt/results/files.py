"""Reading and writing the small JSON files of a results directory as data: validated on
read (a malformed file is an error naming the file and line, never a traceback), written
whole or not at all."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)


class ResultsError(ValueError):
    """A results file that cannot be read or written; the message names the file (and line)."""


# what a string read from a file may not carry onto a page, a PR comment or a terminal:
# control characters (escape sequences; newlines that start a heading), a table's `|`, HTML's
# `<` (`<!--` hides the rest of a comment), a code span's backtick; each becomes a look-alike
_INERT = str.maketrans({**{chr(c): " " for c in [*range(32), *range(127, 160)]},
                        "|": "¦", "<": "‹", ">": "›", "`": "'"})


def inert(value, key: str = ""):
    """A document parsed from a results directory (or a pytest-benchmark JSON), every string
    in it, keys too, made inert: a file from elsewhere shows as text wherever it is shown.
    `](` is split too, so that no link or image (a tracking beacon) is written. An `error`
    keeps its lines (its first is what pages show; the traceback follows), each made inert."""
    if isinstance(value, str) and key == "error":
        return "\n".join(inert(line) for line in value.split("\n"))
    if isinstance(value, str):
        return value.translate(_INERT).replace("](", "] (")
    if isinstance(value, dict):
        return {inert(k): inert(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [inert(v) for v in value]
    return value


def read_json(path: str | Path, model: type[T]) -> T:
    """`path` parsed, made inert and validated as `model`."""
    p = Path(path)
    try:
        doc = inert(json.loads(read_own(p)))
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


def linked(p: Path) -> ResultsError:
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
                raise linked(p)


def open_own(path: str | Path, flags: int) -> int:
    """os.open of a results directory's file that refuses a symbolic link in its place
    (O_NOFOLLOW), as no_links does, for a link planted after that check, and anything but
    a plain file: a FIFO would block its reader for ever (opened without blocking, then
    refused), a folder raises mid-read."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except IsADirectoryError:
        raise not_a_file(Path(path), "a folder") from None
    except OSError:
        if Path(path).is_symlink():
            raise linked(Path(path)) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise not_a_file(Path(path), "a folder" if stat.S_ISDIR(mode) else "a FIFO or device")
    os.set_blocking(fd, True)  # a plain file's reads never wait: as opened by open()
    return fd


def not_a_file(path: Path, what: str) -> ResultsError:
    return ResultsError(f"{path} is {what}, not a file: a results directory holds plain "
                        "files where modelopt writes them; was it made by hand?")


def read_own(path: str | Path) -> bytes:
    """A results directory's file, never read through a link planted in its place (another
    run's records, or any file of the user's, would be read as this directory's)."""
    with os.fdopen(open_own(path, os.O_RDONLY), "rb") as f:
        return f.read()


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
