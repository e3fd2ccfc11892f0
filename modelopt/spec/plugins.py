"""Filling the registries: modelopt's own techniques and a user's plugin modules.

modelopt's techniques and its backends (in modelopt.run, next to the processes they start)
are loaded like a user's plugins, by module name: the specification layer knows the
registries, not what fills them, and imports none of it (tests/test_layout.py checks the
import statements; these names are the one, deliberate, run-time link).
"""

from __future__ import annotations

import importlib
import os

from modelopt.spec.registries import BY_KEY
from modelopt.spec.registry import Registry

BUILTIN = ("modelopt.techniques", "modelopt.run.backends")


def env_plugins() -> list[str]:
    """Module names in MODELOPT_PLUGINS (comma-separated)."""
    return [n.strip() for n in os.environ.get("MODELOPT_PLUGINS", "").split(",") if n.strip()]


def load(extra: tuple[str, ...] | list[str] = ()) -> dict[str, Registry]:
    """Import modelopt's entries and the plugin modules (MODELOPT_PLUGINS, then `extra`);
    return suite key -> registry. Cell, rank and timing processes call it too, so a plugin
    registers wherever a cell runs. Importing a module twice is free."""
    for name in (*BUILTIN, *env_plugins(), *extra):
        importlib.import_module(name)
    return BY_KEY
