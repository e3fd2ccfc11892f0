"""`modelopt list`: every registered technique with its parameters and facts, the train
keys and what a cell gets by default, as text."""

from __future__ import annotations

import inspect
from dataclasses import asdict
from typing import Annotated

from modelopt.spec import plugins
from modelopt.spec.keys import DEFAULTS
from modelopt.spec.registries import TASKS, WEIGHTS
from modelopt.spec.registry import describe
from modelopt.spec.schema import DEFAULT_STEPS, TrainConfig


def _registries(ctx: dict | None = None) -> dict:
    return {**plugins.load(ctx), "model weights (model: {..., weights: FILE})": WEIGHTS,
            "tasks (a dataset's)": TASKS}


def _silent(ctx: dict | None) -> list[str]:
    """The plugin modules of `ctx` whose import registered nothing new, each imported in
    turn (a package registers through its submodules, a wrapper through what it imports)."""
    def entries() -> set:
        return {(key, name) for key, reg in _registries().items() for name in reg.names()}

    silent, seen = [], entries()
    for module in (ctx or {}).get("modules", []):
        plugins.load({**ctx, "modules": [module]})
        now = entries()
        silent += [] if now - seen else [module]
        seen = now
    return silent


def _origin(fn) -> str:
    """` [from my_module]` for an entry a plugin registered; modelopt's own say nothing."""
    module = getattr(fn, "__module__", "") or ""
    return "" if module == "modelopt" or module.startswith("modelopt.") else f" [from {module}]"


def _word(value) -> str:
    """A fact as words: a tuple of declared figures by their names, not their dicts."""
    if isinstance(value, tuple):
        return ", ".join(v["name"] if isinstance(v, dict) and "name" in v else str(v)
                         for v in value)
    return str(value)


def _by_params(info: dict, fact: str) -> str:
    """Where the entry's parameters decide a fact (`input_from`: csv's `text:` gives
    tokens), its value is the default only, and said so."""
    return ", or as its parameters say" if callable(info.get(f"{fact}_from")) else ""


def _entries(reg):
    """(name, parameters, facts, doc) of each entry, as words (no code reprs)."""
    for e in reg.entries():
        params = ", ".join(
            f"{p.name}: {describe(p.annotation)}"
            + ("" if p.default is inspect.Parameter.empty else f" = {p.default!r}")
            for p in e.params)
        info = asdict(e.info)
        facts = "".join(f" [{k}={_word(v)}{_by_params(info, k)}]" for k, v in info.items()
                        if v not in (None, False, ()) and not callable(v))
        yield e.name, params, facts + _origin(e.fn), e.doc


def _train_keys():
    for name, field in TrainConfig.model_fields.items():
        kind = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        note = (f"  (steps or epochs, not both; neither: {DEFAULT_STEPS} steps)"
                if name in ("steps", "epochs") else "")
        yield name, f"{describe(kind)} = {field.get_default(call_default_factory=True)!r}{note}"


def _implied() -> str:
    implied = {k: v["name"] if isinstance(v, dict) else "the task's default"
               for k, v in DEFAULTS.items() if k != "train"}
    return "a cell that does not name them gets: " + ", ".join(
        f"{k}: {v}" for k, v in implied.items())


def listing(ctx: dict | None = None) -> str:
    """Every entry; `ctx` (plugins.context) names plugin modules to import and list too, and
    a module of them that registered nothing is said at the end."""
    lines, silent = [], _silent(ctx)
    for key, reg in _registries(ctx).items():
        lines.append(f"{key}:")
        for name, params, facts, doc in _entries(reg):
            lines.append(f"  {name}({params}){facts}")
            lines += [f"      {line}".rstrip() for line in doc.splitlines()]
    lines.append("train:")
    lines += [f"  {name}: {text}" for name, text in _train_keys()]
    lines.append(_implied())
    lines += [f"note: plugin module '{m}' registered nothing: a registry's `register` must "
              "run when it is imported (e.g. `@LOSSES.register(\"focal\")` on a function "
              "at module level)" for m in silent]
    return "\n".join(lines)


def listing_markdown() -> str:
    """The same, as the documentation's reference page (tools/gen_docs.py)."""
    lines = ["# Techniques and their parameters", "",
             "Generated from the registries (`modelopt list` prints the same); a plugin's "
             "entries appear there once it is loaded.", ""]
    for key, reg in _registries().items():
        lines += [f"## {key}", ""]
        for name, params, facts, doc in _entries(reg):
            lines += [f"### `{name}`", "", f"`{name}({params})`{facts}", "",
                      " ".join(doc.split()) or "(no description)", ""]
    lines += ["## train", "", "| key | type = default |", "|---|---|"]
    lines += [f"| `{name}` | `{text}` |" for name, text in _train_keys()]
    lines += ["", _implied().capitalize() + ".", ""]
    return "\n".join(lines)
