"""Filling the registries: modelopt's own techniques and a user's plugin modules.

modelopt's techniques and its backends (in modelopt.run, next to the processes they start)
are loaded like a user's plugins, by module name: the specification layer knows the
registries, not what fills them, and imports none of it (tests/test_layout.py checks the
import statements; these names are the one, deliberate, run-time link).

A suite's own plugins travel in each cell's config as a context {"modules": [...],
"path": [folders]}: every process that runs a cell, a rank or a timing loads it, however it
was started (forkserver children and Ray workers do not inherit the parent's sys.path or
environment as it is when they start).
"""

from __future__ import annotations

import importlib
import os
import sys

from modelopt.spec.keys import BY_KEY
from modelopt.spec.registry import Registry

BUILTIN = ("modelopt.techniques", "modelopt.run.backends")


class PluginError(ImportError):
    """A plugin module that cannot be imported: names the module and why."""


def env_plugins() -> list[str]:
    """Module names in MODELOPT_PLUGINS (comma-separated)."""
    return [n.strip() for n in os.environ.get("MODELOPT_PLUGINS", "").split(",") if n.strip()]


def context(modules: list[str], folder: str | None) -> dict | None:
    """What a cell needs to find a suite's own code: its plugin modules and the suite file's
    folder (where they, and factories named by import path, may live). None when empty."""
    if not modules and folder is None:
        return None
    return {"modules": list(modules), "path": [folder] if folder else []}


def import_module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise PluginError(f"cannot import plugin module '{name}' ({exc}); it must be "
                          "installed, on PYTHONPATH, or beside the suite file") from None


def load(ctx: dict | list[str] | tuple[str, ...] | None = None) -> dict[str, Registry]:
    """Import modelopt's entries, MODELOPT_PLUGINS and a suite's context (see `context`; or
    just module names); return suite key -> registry. Cell, rank and timing processes call
    it too, so a plugin registers wherever a cell runs. Importing a module twice is free."""
    if isinstance(ctx, (list, tuple)):
        ctx = context(list(ctx), None)
    for folder in (ctx or {}).get("path", []):
        if folder not in sys.path:
            sys.path.append(folder)
    for name in BUILTIN:
        importlib.import_module(name)
    for name in (*env_plugins(), *(ctx or {}).get("modules", [])):
        import_module(name)
    return BY_KEY
