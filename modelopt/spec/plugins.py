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

import functools
import hashlib
import importlib
import os
import site
import sys
import sysconfig
import traceback

from modelopt.spec.keys import BY_KEY
from modelopt.spec.registry import Registry

BUILTIN = ("modelopt.techniques", "modelopt.run.backends")
_MODELOPT = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # editable


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
        missing = getattr(exc, "name", None)
        if missing and not (name == missing or name.startswith(f"{missing}.")):
            # the plugin was found; something it imports was not
            raise PluginError(f"plugin module '{name}' imports '{missing}', which cannot be "
                              f"imported here ({exc}): install it") from None
        raise PluginError(f"cannot import plugin module '{name}' ({exc}); it must be "
                          "installed, on PYTHONPATH, or beside the suite file (in the working "
                          "directory, for --plugins)") from None
    except Exception as exc:  # noqa: BLE001 - the module itself raised while importing
        raise PluginError(f"importing '{name}' raised {type(exc).__name__}: {exc}"
                          + _where(exc)) from None


def _where(exc: BaseException) -> str:
    """ " (at file:line)" of the innermost frame of the user's own code (not an installed
    library's, the standard library's or the import machinery's, where a call of theirs may
    raise): the line to mend (a SyntaxError names its own line in its message)."""
    if isinstance(exc, SyntaxError):
        return ""
    libraries = ({sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")}
                 | set(site.getsitepackages()) | {site.getusersitepackages(), _MODELOPT})
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith("<")
              and not any(f.filename.startswith(lib) for lib in libraries)]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def load(ctx: dict | list[str] | tuple[str, ...] | None = None) -> dict[str, Registry]:
    """Import modelopt's entries, MODELOPT_PLUGINS and a suite's context (see `context`; or
    just module names); return suite key -> registry. Cell, rank and timing processes call
    it too, so a plugin registers wherever a cell runs. Importing a module twice is free."""
    if isinstance(ctx, (list, tuple)):
        ctx = context(list(ctx), None)
    for folder in (ctx or {}).get("path", []):
        _FOLDERS.add(os.path.realpath(folder))
        if folder not in sys.path:
            sys.path.append(folder)
    for name in BUILTIN:
        importlib.import_module(name)
    for name in (*env_plugins(), *(ctx or {}).get("modules", [])):
        _not_shadowed(import_module(name), (ctx or {}).get("path", []))
    return BY_KEY


_FOLDERS: set[str] = set()  # suite folders this process has put on sys.path


def _not_shadowed(module, folders: list[str]) -> None:
    """A module of the suite's folder named as one Python or a package already has
    (profile.py, test.py) is never imported: the other one is, and registers nothing. (One
    process loading two suites' folders, as tests do, keeps the first folder's module.)"""
    found = getattr(module, "__file__", None)
    if not found or any(os.path.realpath(found).startswith(f + os.sep) for f in _FOLDERS):
        return
    for folder in folders:
        mine = os.path.join(folder, *module.__name__.split(".")) + ".py"
        if os.path.isfile(mine) and os.path.realpath(found) != os.path.realpath(mine):
            raise PluginError(f"plugin module '{module.__name__}': {mine} is shadowed by "
                              f"{found}, a module of that name found first; rename yours")


def check_factories(config: dict) -> None:
    """The modules of factories a cell names by import path are the suite folder's own, not
    one of that name found first (the working directory's under `python -m`): else another
    file's code ran every cell, found out only when the timing stage came to rebuild it."""
    folders = (config.get("plugins") or {}).get("path") or []
    for name in dict.fromkeys(_imported_by_path(config)):
        _not_shadowed(import_module(name), folders)


def code_of(config: dict) -> str | None:
    """A hash of the user's own code a cell runs, as this process imports it: its suite's
    plugin modules, MODELOPT_PLUGINS and the modules of factories named by import path.
    None where it runs none. A plugin edited since is another training (run/dense.py) and
    another suite content (a results directory never resumes over it)."""
    modules = [*env_plugins(), *((config.get("plugins") or {}).get("modules") or []),
               *_imported_by_path(config)]
    return _code(tuple(dict.fromkeys(modules)))


@functools.lru_cache(maxsize=64)
def _code(modules: tuple[str, ...]) -> str | None:
    files = set()
    for name in modules:
        path = getattr(sys.modules.get(name) or import_module(name), "__file__", None)
        if path and os.path.basename(path) == "__init__.py":  # a package: all its source
            root = os.path.dirname(path)
            files |= {os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
                      if f.endswith(".py")}
        elif path:
            files.add(path)
    return hash_sources(files) if files else None


def hash_sources(paths, root: str | None = None) -> str:
    """A hash of source files, each by its name (relative to `root`, else its own) and
    content: modelopt's own code (run/dense.py) and the user's."""
    h = hashlib.sha1()
    for path in sorted(map(str, paths)):
        h.update((os.path.relpath(path, root) if root else os.path.basename(path)).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:12]


def _imported_by_path(value) -> list[str]:
    """The modules of `package.module:function` names anywhere in a config."""
    if isinstance(value, dict):
        name = value.get("name")
        own = [name.partition(":")[0]] if isinstance(name, str) and ":" in name else []
        return own + [m for v in value.values() for m in _imported_by_path(v)]
    if isinstance(value, list):
        return [m for v in value for m in _imported_by_path(v)]
    return []
