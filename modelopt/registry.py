"""Registries: technique name -> factory, with user parameters checked against its signature."""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, get_type_hints

from pydantic import TypeAdapter, ValidationError


class RegistryError(ValueError):
    """A name or parameter that no registered technique accepts (a user error)."""


@dataclass(frozen=True)
class Param:
    name: str  # as a suite writes it
    annotation: Any
    default: Any  # inspect.Parameter.empty when required
    arg: str = ""  # the Python argument: `global_` for a suite's `global` (a keyword)


@dataclass(frozen=True)
class Entry:
    name: str
    fn: Callable
    params: tuple[Param, ...]
    flags: dict = field(default_factory=dict)
    doc: str = ""


def _user_params(fn: Callable) -> tuple[Param, ...]:
    """The keyword parameters a suite may set; positional-only ones are supplied by modelopt."""
    hints = get_type_hints(fn)
    out = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out.append(Param(p.name.rstrip("_"), hints.get(p.name, Any), p.default, p.name))
    return tuple(out)


def closest(name: str, choices) -> str:
    match = difflib.get_close_matches(str(name), list(choices), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


class Registry:
    """Name -> factory. `register` is a decorator; `check` validates a spec before anything runs."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, **flags):
        def deco(fn: Callable) -> Callable:
            if name in self._entries:
                raise KeyError(f"{self.kind} '{name}' is registered twice")
            doc = (inspect.getdoc(fn) or "").split("\n")[0]
            self._entries[name] = Entry(name, fn, _user_params(fn), dict(flags), doc)
            return fn

        return deco

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def get(self, name: str) -> Entry:
        if name not in self._entries:
            raise RegistryError(
                f"unknown {self.kind} '{name}'{closest(name, self._entries)}; "
                f"choose one of: {', '.join(self.names())}"
            )
        return self._entries[name]

    def check(self, name: str, params: dict) -> dict:
        """Validate and coerce `params` for `name`; return them with defaults filled in."""
        entry = self.get(name)
        known = {p.name: p for p in entry.params}
        out = {}
        for key, value in params.items():
            if key not in known:
                allowed = ", ".join(known) or "no parameters"
                raise RegistryError(
                    f"{self.kind} '{name}' has no parameter '{key}'{closest(key, known)}; "
                    f"it takes: {allowed}"
                )
            try:
                out[key] = TypeAdapter(known[key].annotation).validate_python(value, strict=False)
            except ValidationError as exc:
                msg = exc.errors()[0]["msg"]
                raise RegistryError(
                    f"{self.kind} '{name}' parameter '{key}': {msg} (got {value!r}, "
                    f"expected {_type_name(known[key].annotation)})"
                ) from None
        for p in entry.params:
            if p.name not in out:
                if p.default is inspect.Parameter.empty:
                    raise RegistryError(f"{self.kind} '{name}' needs parameter '{p.name}'")
                out[p.name] = p.default
        return out

    def build(self, name: str, *context, **params):
        """Call the factory; `params` use the suite's names (checked ones, see `check`)."""
        entry = self.get(name)
        args = {p.name: p.arg for p in entry.params}
        return entry.fn(*context, **{args.get(k, k): v for k, v in params.items()})


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
