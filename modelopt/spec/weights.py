"""A model spec's `weights:`, checked: which source reads the file (by its suffix, or named),
where the file is (relative to the suite file's folder), and its content hash, which is
part of the cell's id (a retrained file is a new cell, never skipped as done).

    weights: model.pth                          # a state_dict saved with torch.save
    weights: {path: ckpt.pt, key: model_state}  # a checkpoint holding it under a key
    weights: {name: safetensors, path: model.safetensors}
"""

from __future__ import annotations

import hashlib
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from modelopt.spec.registries import WEIGHTS
from modelopt.spec.registry import RegistryError

# the folder a suite's relative paths resolve against, while it is resolved (suite.parse)
FOLDER: ContextVar[str | None] = ContextVar("suite_folder", default=None)


def checked(value: Any) -> dict:
    """`weights:` as a checked spec: {name, path (absolute), sha256, ...source params}."""
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict) or not isinstance(value.get("path"), str):
        raise RegistryError(f"model weights must be a file path or a mapping with 'path' "
                            f"(and optionally 'name', 'key'); got {value!r}")
    path = Path(value["path"]).expanduser()
    if not path.is_absolute():
        path = Path(FOLDER.get() or ".") / path
    path = path.resolve()
    if not path.is_file():
        raise RegistryError(f"model weights {value['path']}: no such file ({path})")
    name = value.get("name") or source_for(path)
    params = {k: v for k, v in value.items() if k not in ("name", "path", "sha256")}
    try:
        WEIGHTS.get(name)
    except RegistryError as exc:
        raise RegistryError(f"model weights: {exc}") from None
    params = _checked_params(name, params)
    return {"name": name, "path": str(path), "sha256": sha256(path), **params}


def _checked_params(name: str, params: dict) -> dict:
    """The source's own parameters (a checkpoint's `key`), against its signature."""
    try:
        return WEIGHTS.check(name, params)
    except RegistryError as exc:
        raise RegistryError(f"model weights: {exc}") from None


def source_for(path: Path) -> str:
    """The source that reads a file with this suffix."""
    suffix = path.suffix.lower()
    for entry in WEIGHTS.entries():
        if suffix in entry.info.suffixes:
            return entry.name
    known = sorted(f"{s} ({e.name})" for e in WEIGHTS.entries() for s in e.info.suffixes)
    raise RegistryError(f"model weights {path.name}: no source reads '{suffix}' files; name "
                        f"one (weights: {{name: ..., path: ...}}); known: {', '.join(known)}")


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def identity(spec: dict) -> dict:
    """What of a checked `weights:` enters the cell's id: the file's content and how it is
    read, not where this machine keeps it."""
    return {k: v for k, v in spec.items() if k != "path"}
