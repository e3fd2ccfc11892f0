"""How the `modelopt` command shows modelopt's own warnings: as its other messages are
(`modelopt: warning: ...`), not as Python's `path:line: UserWarning` with the source line
under it (a results file's truncated last line read so). Other libraries' warnings keep
Python's form: their source is the point."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

_OURS = Path(__file__).resolve().parent


def plain_warnings() -> None:
    """From now on, in this process (the command's, not a library user's); once."""
    python_s = warnings.showwarning
    if getattr(python_s, "plain", False):
        return

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if not Path(filename).resolve().is_relative_to(_OURS):
            return python_s(message, category, filename, lineno, file, line)
        print(f"modelopt: warning: {message}", file=file or sys.stderr)

    show.plain = True  # type: ignore[attr-defined]
    warnings.showwarning = show
