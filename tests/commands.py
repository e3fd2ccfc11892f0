"""Where this interpreter's `modelopt` command is: beside it in an installed venv (`make
install`), else on PATH with a `python` beside it (the device check runs the tree against a
GPU machine's own torch, with both in /tmp/site/bin: tools/device_check.sh)."""

import shutil
import sys
from pathlib import Path


def command_dir() -> Path:
    """The folder holding `modelopt` and a `python` that runs it."""
    here = Path(sys.executable).parent
    found = shutil.which("modelopt")
    return here if (here / "modelopt").exists() or not found else Path(found).parent
