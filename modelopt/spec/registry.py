"""Registries: technique name -> factory, with user parameters checked against its signature.

A factory's signature is the schema: its keyword parameters are what a suite may set, their
annotations (with pydantic constraints, `Annotated[float, Field(gt=0)]`) what values are
allowed. Each registry keeps typed facts per entry (`info`), as timm keeps `OptimInfo`.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Annotated, Any, Callable, get_type_hints

from pydantic import Field, TypeAdapter, ValidationError

# Constraints that factories put in their signatures; validation checks them before a run.
Positive = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]  # e.g. a pruning amount: all of it is not a model
Probability = Annotated[float, Field(ge=0, le=1)]


class _CellConfig:
    """Marks a parameter whose value is a cell config of its own (a KD teacher): the suite
    resolves and checks it like a cell, with the keys `TEACHER_KEYS` allows."""

    def __repr__(self) -> str:
        return "cell config"


CELL_CONFIG = _CellConfig()
TeacherConfig = Annotated[dict, CELL_CONFIG]


def takes_cell_config(param: "Param") -> bool:
    return any(m is CELL_CONFIG for m in getattr(param.annotation, "__metadata__", ()))


class RegistryError(ValueError):
    """A name or parameter that no registered technique accepts (a user error)."""


class NestedError(RegistryError):
    """An error inside a nested value (a KD teacher's own keys): `where` in it, dotted, and
    the error itself, so the suite's message names the key as written."""

    def __init__(self, where: str, error: Exception):
        self.where, self.error = where, error
        super().__init__(f"{where}: {error}")


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
    info: Any  # the registry's typed facts about this entry (a frozen dataclass)
    doc: str = ""


def _user_params(fn: Callable) -> tuple[Param, ...]:
    """The keyword parameters a suite may set; positional-only ones are supplied by modelopt."""
    hints = get_type_hints(fn, include_extras=True)  # keep Annotated constraints
    out = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out.append(Param(p.name.rstrip("_"), hints.get(p.name, Any), p.default, p.name))
    return tuple(out)


def closest(name: str, choices) -> str:
    # matched without case, so 'BF16' finds 'bf16' (difflib alone scores them 0.5 and drops it)
    by_lower = {str(c).lower(): c for c in choices}
    typed = str(name).lower()
    # a weak match (difflib's 0.6 to 0.7) only of a name as long, give or take a letter:
    # `mpl` is `mlp`, but `widht` is not `weights`
    match = [m for m in difflib.get_close_matches(typed, list(by_lower), n=3)
             if abs(len(m) - len(typed)) <= 1
             or difflib.SequenceMatcher(None, typed, m).ratio() >= 0.7]
    return f" (did you mean '{by_lower[match[0]]}'?)" if match else ""


@dataclass(frozen=True)
class NoInfo:
    """For registries whose entries need no facts beyond their signature."""


class Registry:
    """Name -> factory. `register` is a decorator; `check` validates a spec before anything runs.

    `info` is the dataclass of facts an entry declares at registration (`register("gd",
    full_batch=True)`); a misspelt fact is an error there, not a check silently skipped."""

    def __init__(self, kind: str, info: type = NoInfo, supplies: tuple[str, ...] = ()):
        self.kind, self.info_type = kind, info
        self.supplies = supplies  # what modelopt passes positionally, before a suite's params
        self._entries: dict[str, Entry] = {}
        # what a plain function named by import path becomes, where the registry's entries
        # are made by a decorator of their own (techniques/optim.py's `optimizer`)
        self.adapt: Callable[[str, Callable], Callable] | None = None

    def register(self, name: str, **facts):
        try:
            info = self.info_type(**facts)
        except TypeError as exc:
            raise TypeError(f"{self.kind} '{name}': {exc}") from None

        def deco(fn: Callable) -> Callable:
            if name in self._entries:
                raise KeyError(f"{self.kind} '{name}' is registered twice")
            self._takes_supplied(name, fn)
            doc = inspect.getdoc(fn) or ""
            self._entries[name] = Entry(name, fn, _user_params(fn), info, doc)
            return fn

        return deco

    def info(self, name: str):
        return self.get(name).info

    def _takes_supplied(self, name: str, fn: Callable) -> None:
        """A factory takes what modelopt passes it positionally, as positional-only
        parameters (the rest are the suite's): else its cells fail at run time, or the
        suite is asked for `input_shape`."""
        sig = inspect.signature(fn).replace(return_annotation=inspect.Signature.empty)
        params = list(sig.parameters.values())
        own = [p for p in params if p.kind is p.POSITIONAL_ONLY]
        varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
        n = len(self.supplies)
        extra = [p.name for p in own[n:] if p.default is p.empty]
        if (len(own) < n and not varargs) or extra:
            wanted, called = ", ".join(self.supplies), getattr(fn, "__name__", "")
            called = called if called.isidentifier() else "f"  # a lambda
            raise TypeError(
                f"{self.kind} '{name}': {called}{sig} "
                + (f"takes {', '.join(extra)} positional-only without a default, which "
                   f"modelopt does not pass (it passes {f'({wanted})' if n else 'none'}): "
                   "give a default, or make it a keyword parameter" if extra else
                   f"must take ({wanted}) first, positional-only, as modelopt passes them: "
                   f"def {called}({wanted}, /, ...)"))

    def _import(self, name: str) -> None:
        """`package.module:function`: a factory named by its import path, registered under
        that name on first use, in whichever process uses it. Its signature is checked as a
        registered one's; its facts are those it was registered with, else the defaults."""
        import importlib

        module, _, attr = name.partition(":")
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise RegistryError(f"{self.kind} '{name}': cannot import module '{module}' ({exc});"
                                " it must be installed, on PYTHONPATH, or beside the suite file") \
                from None
        fn = getattr(mod, attr, None)
        if not callable(fn):
            raise RegistryError(f"{self.kind} '{name}': module '{module}' has no function "
                                f"'{attr}'{closest(attr, [n for n in dir(mod) if not n.startswith('_')])}")
        # a factory registered through a wrapper (techniques/optim.py's `optimizer`): the
        # function the registry holds, not the one its module kept under the name
        fn = getattr(fn, "__modelopt_entry__", fn)
        known = next((e for e in self._entries.values() if e.fn is fn), None)
        try:
            info = known.info if known else self.info_type()
        except TypeError:
            raise RegistryError(f"{self.kind} '{name}': a {self.kind} needs facts given at "
                                f"registration; register it with {self.kind.upper()}S.register "
                                "in a plugin module") from None
        try:
            if known is None and self.adapt is not None:
                fn = self.adapt(name, fn)
            self._takes_supplied(name, fn)
        except TypeError as exc:
            raise RegistryError(str(exc)) from None
        self._entries[name] = Entry(name, fn, _user_params(fn), info, inspect.getdoc(fn) or "")

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def get(self, name: str) -> Entry:
        if name not in self._entries and ":" in name:
            self._import(name)
        if name not in self._entries:
            known = f"choose one of: {', '.join(self.names())}" if self._entries else \
                f"modelopt has no {self.kind} of its own"
            raise RegistryError(
                f"unknown {self.kind} '{name}'{closest(name, self._entries)}; {known} (a "
                f"plugin's {self.kind} is known once the suite's `plugins:` or "
                "MODELOPT_PLUGINS loads its module)")
        return self._entries[name]

    def check(self, name: str, params: dict, extra: tuple[str, ...] = ()) -> dict:
        """Validate and coerce `params` for `name`; return them with defaults filled in.
        `extra`: what its key takes besides (a model's `weights`), named in the hint."""
        entry = self.get(name)
        known = {p.name: p for p in entry.params}
        out = {}
        for key, value in params.items():
            if key not in known:
                names = [*known, *extra]
                raise RegistryError(
                    f"{self.kind} '{name}' has no parameter '{key}'{closest(key, names)}; "
                    f"it takes: {', '.join(names) or 'no parameters'}"
                )
            try:
                out[key] = TypeAdapter(known[key].annotation).validate_python(value, strict=False)
            except ValidationError as exc:
                msg = exc.errors()[0]["msg"]
                raise RegistryError(
                    f"{self.kind} '{name}' parameter '{key}': {msg} (got {value!r}, "
                    f"expected {describe(known[key].annotation)})"
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

    def build_spec(self, spec: dict, *context):
        """Build from a suite spec, `{"name": ..., **params}`."""
        return self.build(spec["name"], *context, **{k: v for k, v in spec.items() if k != "name"})


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def describe(annotation) -> str:
    """An annotation as `modelopt list` prints it: `float > 0`, `'relu' | 'tanh'`, `int | None`."""
    import types
    import typing

    import annotated_types as at

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        if any(m is CELL_CONFIG for m in args[1:]):
            return "cell config"
        words = [describe(args[0])]
        for meta in args[1:]:
            for c in getattr(meta, "metadata", [meta]):
                for cls, field, op in ((at.Gt, "gt", ">"), (at.Ge, "ge", ">="),
                                       (at.Lt, "lt", "<"), (at.Le, "le", "<=")):
                    if isinstance(c, cls):
                        words.append(f"{op} {getattr(c, field)}")
        return " ".join(words)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else describe(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(describe(a) for a in args)}]"
    return _type_name(annotation)
