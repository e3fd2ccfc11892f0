"""Suite files: YAML loading and complete validation, before anything runs."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modelopt.spec import budget, data_files, explain, patterns, plugins, training, weights, yaml_doc
from modelopt.spec.cell import Cell
from modelopt.spec.cells import (
    _normalize_axis_value,
    _split_dotted,
    cell_id,
    check_spec,
    expand,
    names_by_path,
    resolve_cell,
)
from modelopt.spec.keys import IMPLIED, UNNAMED
from modelopt.spec.keys import REQUIRED as REQUIRED_KEYS
from modelopt.spec.match import config_value
from modelopt.spec.patterns import short
from modelopt.spec.registries import CELL_CHECKS, spans_ranks
from modelopt.spec.registry import NestedError, RegistryError
from modelopt.spec.schema import (
    Suite,
    SuiteError,
    SuiteFile,
)

# re-exported: a suite's parts are named from here
__all__ = ["Cell", "Suite", "SuiteError", "SuiteFile", "load", "parse", "cell_id", "expand"]

def _read(text: str | bytes, path: str) -> SuiteFile:
    """The YAML document, checked against the top-level schema."""
    try:
        doc = yaml_doc.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SuiteError(path, "", f"not valid YAML: {where}{problem}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise SuiteError(path, "", f"cannot be read as text: {exc}") from None
    except RecursionError:
        raise SuiteError(path, "", "nested too deeply") from None
    if doc is None:
        raise SuiteError(path, "", "the file is empty; a suite needs at least `name` and "
                         "`defaults` (or `matrix`): docs/reference/suite-file.md")
    if not isinstance(doc, dict):
        raise SuiteError(path, "", f"a suite is a mapping with name, matrix, ...; got {type(doc).__name__}")
    if _too_large(doc):
        raise SuiteError(path, "", f"too large once YAML aliases are expanded (over {MAX_NODES:,} "
                         "values, or nested deeper than 50): write the cells out, or use matrix")
    try:
        return SuiteFile(**{str(k): v for k, v in doc.items()})
    except ValidationError as exc:
        raise SuiteError(path, *explain.where(exc)) from None
    except RecursionError:
        raise SuiteError(path, "", "nested too deeply") from None


class _Guard:
    """Runs a check of one value; any error becomes a SuiteError naming where it was written."""

    def __init__(self, path: str, plugins: tuple[str, ...] = ()):
        self.path = path
        self.plugins = plugins  # the suite's own modules, named where a name is unknown

    def __call__(self, where: str, fn, *args):
        try:
            return fn(*args)
        except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
            raise self.error(where, exc) from None

    def error(self, where: str, exc: Exception) -> SuiteError:
        if isinstance(exc, NestedError):  # a teacher's own key: named as written
            return self.error(f"{where}.{exc.where}", exc.error)
        if isinstance(exc, RegistryError):
            said = str(exc)
            if said.startswith("unknown ") and self.plugins:  # a plugin that forgot to register
                said += (f" (the suite's plugins {', '.join(self.plugins)} imported, and none "
                         "registered that name: is its `.register(...)` decorator missing?)")
            return SuiteError(self.path, where, said)
        if isinstance(exc, ValidationError):
            first = explain.telling(exc.errors())
            loc = ".".join(str(p) for p in first["loc"])
            return SuiteError(self.path, f"{where}.{loc}" if loc else where,
                              explain.said(first, exc.title))
        # anything else that a value makes go wrong is still the value's fault
        return SuiteError(self.path, where, f"invalid value ({type(exc).__name__}: {exc})")


def _checked_axes(spec: SuiteFile, guard: _Guard, regs) -> tuple[dict, dict, list, list]:
    """defaults, matrix, include and exclude with every value checked where it is written,
    so the message points at the right line."""
    defaults = {}
    for key, value in spec.defaults.items():
        norm = guard(f"defaults.{key}", _normalize_axis_value, key, value)
        if "." not in key:
            guard(f"defaults.{key}", check_spec, key, norm, regs)
        defaults[key] = value
    matrix = {}
    for key, values in spec.matrix.items():
        if not values:
            raise SuiteError(guard.path, f"matrix.{key}", "is an empty list; give at least one value")
        matrix[key] = [guard(f"matrix.{key}[{i}]", _normalize_axis_value, key, v)
                       for i, v in enumerate(values)]
        if "." not in key:
            for i, norm in enumerate(matrix[key]):
                guard(f"matrix.{key}[{i}]", check_spec, key, norm, regs)
    include = [{k: guard(f"include[{i}].{k}", _normalize_axis_value, k, v) for k, v in inc.items()}
               for i, inc in enumerate(spec.include)]
    exclude = [{k: guard(f"exclude[{i}].{k}", _normalize_axis_value, k, v) for k, v in ex.items()}
               for i, ex in enumerate(spec.exclude)]
    for i, ex in enumerate(exclude):
        for k in ex:
            if k not in matrix:
                raise SuiteError(guard.path, f"exclude[{i}].{k}", f"is not a matrix key; matrix "
                                 f"keys: {', '.join(matrix) or 'none'}")
    _names_checked("include", include, guard, regs)
    _names_checked("exclude", exclude, guard, regs)
    if spec.timeout_s is not None:  # the suite's limit, unless its defaults set their own
        defaults = {"train": {"timeout_s": spec.timeout_s}, **defaults}
        if "train" in spec.defaults:
            defaults["train"] = {"timeout_s": spec.timeout_s, **spec.defaults["train"]}
    return defaults, matrix, include, exclude


def _names_checked(where: str, entries: list[dict], guard: _Guard, regs) -> None:
    """Each entry's technique names and parameters, checked where written as `baseline:`'s are
    (an exclude's typo excluded nothing, with a warning); parameters alone name no technique."""
    for i, entry in enumerate(entries):
        for k, norm in entry.items():
            if "." not in k and not patterns.parameters_only(k, norm):
                guard(f"{where}[{i}].{k}", check_spec, k, norm, regs)


def parse(text: str | bytes, path: str = "<suite>", launched_world: int | None = None) -> Suite:
    """Validate a suite document completely, before anything runs. Under a launcher
    (torchrun), `launched_world` is the launched world: it becomes the world_size of every
    cell whose backend spans ranks, so the records and cell ids say how many really trained.
    Relative paths in it (a model's weights) are relative to the suite file's folder."""
    folder = str(Path(path).resolve().parent) if Path(path).is_file() else None
    token = weights.FOLDER.set(folder)
    try:
        return _parse(text, path, launched_world, folder)
    finally:
        weights.FOLDER.reset(token)


def _parse(text: str | bytes, path: str, launched_world: int | None, folder: str | None
           ) -> Suite:
    spec = _read(text, path)
    _check_size(spec, path)
    ctx = plugins.context(spec.plugins, folder)
    regs = _load_plugins(spec, ctx, path)
    guard = _Guard(path, tuple(spec.plugins))
    defaults, matrix, include, exclude = _checked_axes(spec, guard, regs)
    # a suite of defaults alone is one cell
    merged: list = []
    unused: list[str] = []
    combos = expand(matrix, include, exclude, merged, unused) if matrix or include else [{}]
    if not combos:
        raise SuiteError(path, "matrix", "is empty: no cell to run (give matrix values or "
                         "include entries, and check that exclude leaves something)")
    variants = _variants(spec, path, guard)

    def resolved(where: str, overrides: dict) -> dict:
        config = guard(where, resolve_cell, copy.deepcopy(defaults), overrides, regs)
        if launched_world is not None and spans_ranks(config["backend"]):
            config["backend"]["world_size"] = launched_world
        if ctx and (spec.plugins or names_by_path(config)):
            config["plugins"] = ctx  # every process of the cell loads them (spec/plugins.py)
        for check in CELL_CHECKS:  # e.g. trained weights fit the model (techniques/weights.py)
            guard(where, check, config)
        return config

    cells, seen, named, same = [], set(), {}, []  # named: each cell as the matrix wrote it
    tuned: set[str] = set()  # the tune keys some cell names the technique of
    for combo in combos:
        label = ", ".join(f"{k}={short(v) if v is not None else UNNAMED.get(k, 'none')}"
                          for k, v in combo.items())  # deploy=eager, as the tables name it
        base = resolved(f"cell [{label}]" if label else "defaults", combo)  # no matrix: one cell
        for kind, values in variants:
            if kind == "tune":  # a technique's parameter, where the cell names the technique
                values = {k: v for k, v in values.items() if base.get(k.partition(".")[0])}
                tuned.update(values)
            where = f"{kind} [{', '.join(filter(None, (label, str(values))))}]"
            config = resolved(where, {**combo, **values}) if values else base
            group = {"kind": kind, "id": cell_id(base), "values": values} if kind else None
            cell = Cell.of(config, group)
            if cell.cell_id not in seen:  # two routes to the same cell run it once
                seen.add(cell.cell_id)
                cells.append(cell)
                named[cell.cell_id] = where if values else (label or "defaults")
            elif not values:  # said: an axis of two values that plans one cell reads wrong
                same.append(f"{label} is {named[cell.cell_id]}")
    cells += _matched(spec, cells, tuned, path)
    inputs = {c.cell_id: _inputs(c, path) for c in cells}
    content_hash = _content_hash(spec, cells, inputs)
    merges = tuple(_merge_warning(i, joined, spec.include[i], _config_of(defaults, joined[0], regs))
                   for i, joined in merged)
    return Suite(spec.name, path, tuple(spec.seeds), tuple(cells), spec, content_hash,
                 merges + tuple(unused) + _seen_validation(spec, cells) + _alike(same)
                 + training.warnings(cells, named, spec.defaults, regs),
                 patterns.expected_failures(spec, cells, guard, regs),
                 _baseline(spec, cells, guard, regs, merges),
                 {cid: i for cid, i in inputs.items() if i})


def _alike(same: list[str]) -> tuple[str, ...]:
    return tuple(f"matrix: {len(same)} combination(s) are a cell another one names, run once "
                 f"({'; '.join(same[:3])}{' ...' if len(same) > 3 else ''}): the same settings "
                 "written two ways" for _ in same[:1])


def _matched(spec: SuiteFile, cells: list[Cell], tuned: set[str], path: str) -> list[Cell]:
    """Every tune key names a technique some cell has; match_budget's extra rows."""
    for key in set(spec.tune or {}) - tuned:
        raise SuiteError(path, f"tune.{key}", f"sets a parameter of {key.partition('.')[0]}, "
                         "and no cell names one")
    if not spec.match_budget:
        return []
    if spec.tune or spec.cv:
        raise SuiteError(path, "match_budget", "is not combined with tune or cv; run the "
                         "matched rows as a suite of their own")
    return budget.matched(cells, path)


def _content_hash(spec: SuiteFile, cells: list[Cell], inputs: dict) -> str:
    identity: dict = {"seeds": spec.seeds, "cells": [c.cell_id for c in cells]}
    if any(inputs.values()):  # data files, the user's code: changed, another content
        identity["inputs"] = sorted({json.dumps(i, sort_keys=True) for i in inputs.values()})
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def _baseline(spec: SuiteFile, cells: list[Cell], guard, regs, merges: tuple[str, ...]):
    """The suite's checked baseline; a refusal says, too, which include entries changed the
    matrix's cells (the usual reason a baseline the matrix had matches nothing)."""
    try:
        return patterns.baseline(spec, cells, guard, regs)
    except SuiteError as exc:
        if not merges:
            raise
        raise SuiteError(exc.path, exc.where, f"{exc.message}. Note: {' '.join(merges)}") \
            from None


def _inputs(cell: Cell, path: str) -> dict:
    """What a cell read besides its config: its data files' fingerprints and a hash of the
    user's code it runs (only those it has). Not part of its id; a record keeps them, and a
    record of other inputs is not this cell's result (resume runs it again)."""
    try:
        plugins.check_factories(cell.as_config())  # the code hashed is the suite's own
    except ImportError as exc:  # PluginError: another module of that name came first
        raise SuiteError(path, "", str(exc)) from None
    out: dict[str, Any] = {}
    files = data_files.of_dataset(cell.data.dataset.spec())
    if files:
        out["data_files"] = files
    code = plugins.code_of(cell.as_config())
    if code:
        out["code"] = code
    return out


def _seen_validation(spec: SuiteFile, cells: list[Cell]) -> tuple[str, ...]:
    """Tuning cells that start from trained weights on a validation split carved from the
    training split: the model may have trained on it, so tune would choose on seen data."""
    if not spec.tune or not any(c.model.params.get("weights") and c.data.val_fraction > 0
                                for c in cells):
        return ()
    return ("tune chooses by validation score, and cells start from trained weights with "
            "validation carved from the training split (train.val_fraction): a model trained "
            "elsewhere may have seen those samples; hold them out of its training, or set "
            "val_fraction: 0 and do not tune",)


def _check_size(spec: SuiteFile, path: str) -> None:
    """The number of cells the matrix plans, from the axes' lengths alone (the product is
    never built): past `max_cells`, refused before any value is checked."""
    planned = 1
    for values in spec.matrix.values():
        planned *= max(1, len(values))
    for values in (spec.tune or {}).values():
        planned *= max(1, len(values))
    planned *= spec.cv.folds if spec.cv else 1
    if planned > spec.max_cells:
        axes = " x ".join(f"{k} {len(v)}" for k, v in spec.matrix.items())
        raise SuiteError(path, "matrix", f"plans {planned:,} cells ({axes}"
                         f"{' x tune grid' if spec.tune else ''}{' x cv folds' if spec.cv else ''}"
                         f"), more than max_cells {spec.max_cells:,}; split the suite, or set "
                         "max_cells higher if you mean it")


def _load_plugins(spec: SuiteFile, ctx: dict | None, path: str) -> dict:
    """The registries, with the suite's plugins imported first; an unimportable one is an
    error at its key."""
    for i, name in enumerate(spec.plugins):
        try:
            plugins.load(plugins.context([name], ctx["path"][0] if ctx["path"] else None))
        except ImportError as exc:  # PluginError: unimportable, or it raised importing
            raise SuiteError(path, f"plugins[{i}]", str(exc)) from None
    try:
        return plugins.load(ctx)
    except ImportError as exc:  # one of MODELOPT_PLUGINS
        raise SuiteError(path, "", f"{exc} (named in MODELOPT_PLUGINS)") from None


def _config_of(defaults: dict, combo: dict, regs) -> dict | None:
    """A matrix combination's config before an include joined it (None: not on its own)."""
    try:
        return resolve_cell(copy.deepcopy(defaults), combo, regs)
    except Exception:  # noqa: BLE001 - only a hint's value hangs on it
        return None


def _merge_warning(i: int, joined: list[dict], entry: dict, before: dict | None) -> str:
    cells = "; ".join(", ".join(f"{k}={short(v)}" for k, v in c.items()) for c in joined[:4])
    more = f" and {len(joined) - 4} more" if len(joined) > 4 else ""
    new = [k for k in entry if k not in joined[0] and k not in REQUIRED_KEYS]
    value = _unjoined(new[0], before) if new else None
    hint = f" (e.g. `{new[0]}: [{value}]`)" if value is not None else ""
    return (f"include[{i}] ({', '.join(f'{k}={short(v)}' for k, v in entry.items())}) "
            f"changed {len(joined)} existing cell(s) instead of adding one: {cells}{more}. "
            "An include entry joins every matrix combination it does not contradict (GitHub "
            "Actions' rule); to add a cell instead, put the entry's other keys on the matrix"
            f"{hint}, so that it contradicts the combinations there")


def _unjoined(key: str, before: dict | None) -> str | None:
    """A matrix value for `key` that keeps the joined cells as they were, as YAML writes it:
    `none` switches an optional technique off (a required key, model, has none); a setting
    (train.batch_size, optimizer.lr) takes the value the cells had (`none` is no number)."""
    if "." not in key:
        return IMPLIED.get(key, "none")
    value = None if before is None else config_value(before, key)
    return None if value is None else json.dumps(value)


MAX_NODES = 200_000


def _too_large(doc: Any) -> bool:
    """Aliases let a few lines of YAML expand to billions of values ("billion laughs"); count
    values as they would be expanded and stop early."""
    count, stack = 0, [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES or depth > 50:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
            stack.extend((k, depth + 1) for k in node.keys())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return False


def _variants(spec: SuiteFile, path: str, guard) -> list[tuple[str | None, dict]]:
    """What each matrix cell becomes: itself, its tune grid, or its cv folds."""
    if spec.tune and spec.cv:
        raise SuiteError(path, "cv", "use tune or cv in one suite, not both")
    if spec.tune:
        for key, values in spec.tune.items():
            if not values:
                raise SuiteError(path, f"tune.{key}", "is an empty list")
            guard(f"tune.{key}", lambda k: _split_dotted(k)[1] or _bad_tune_key(k), key)
        keys = list(spec.tune)
        return [("tune", dict(zip(keys, vals))) for vals in itertools.product(*spec.tune.values())]
    if spec.cv:
        k = spec.cv.folds
        return [("cv", {"train.folds": k, "train.fold": f}) for f in range(k)]
    return [(None, {})]


def _bad_tune_key(key: str):
    raise RegistryError(f"tune keys set one parameter, like optimizer.lr; got '{key}'")


def load(path: str | Path, launched_world: int | None = None) -> Suite:
    p = Path(path)
    if p.is_dir():
        raise SuiteError(str(path), "", "is a directory; name a suite file in it (e.g. "
                         f"{next(iter(sorted(p.glob('*.yaml'))), 'suites/tiny.yaml')})")
    if not p.is_file():
        raise SuiteError(str(path), "", "no such suite file")
    return parse(p.read_bytes(), str(p), launched_world)
