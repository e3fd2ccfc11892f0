"""From suite values to resolved cells: normalising specs, checking them against the
registries, merging defaults with a matrix combination, expanding the matrix, cell ids."""

from __future__ import annotations

import copy
import itertools
from typing import Any

from pydantic import ValidationError

from modelopt.spec import keys as K
from modelopt.spec import weights
from modelopt.spec.cell import LATER_KEYS, Choice, identity
from modelopt.spec.match import within
from modelopt.spec.registries import suits, task_of
from modelopt.spec.registry import (
    NestedError,
    Registry,
    RegistryError,
    closest,
    takes_cell_config,
)
from modelopt.spec.schema import OFF, TrainConfig

CELL_KEYS, SINGLE_KEYS, LIST_KEYS = K.NAMES, K.SINGLE, K.MANY


def spec_of(value: Any, key: str) -> dict | None:
    """`adam` or `{name: adam, lr: 0.1}` -> `{'name': 'adam', 'lr': 0.1}`; off -> None."""
    if value in OFF:
        return None
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict):
        if "name" not in value:
            raise RegistryError(f"a {key} mapping needs a 'name' (got keys {sorted(value)})")
        if not isinstance(value["name"], str):
            raise RegistryError(f"{key} name must be a string, got {value['name']!r}")
        return dict(value)
    raise RegistryError(f"{key} must be a name or a mapping with 'name', got {value!r}"
                        + (" (YAML reads yes/no/on/off as true/false: write none, or quote "
                           "the name)" if isinstance(value, bool) else ""))


def normalize(key: str, value: Any):
    """The canonical form of one cell key's value (before parameters are checked)."""
    if key == "train":
        if not isinstance(value, dict):
            raise RegistryError(f"train must be a mapping, got {value!r}")
        return dict(value)
    if key in LIST_KEYS:
        items = value if isinstance(value, list) else [value]
        return [s for s in (spec_of(v, key) for v in items) if s is not None]
    if key in SINGLE_KEYS:
        spec = spec_of(value, key)
        return None if spec is not None and spec == {"name": K.IMPLIED.get(key)} else spec
    raise RegistryError(f"unknown cell key '{key}'{closest(key, CELL_KEYS)}; "
                        f"cell keys are: {', '.join(CELL_KEYS)}")


def check_spec(key: str, spec, regs: dict[str, Registry]):
    """Check names and parameters of a normalised value; return it with defaults filled in."""
    if key == "train":
        checked = TrainConfig(**spec).model_dump()
        for field, of in (("finetune_optimizer", "optimizer"), ("finetune_schedule", "schedule")):
            if checked[field] is not None:  # a technique of that registry, checked as one
                checked[field] = check_spec(of, normalize(of, checked[field]), regs)
        return checked
    if spec is None:
        return None
    if key in LIST_KEYS:
        return [check_spec_one(key, s, regs) for s in spec]
    checked, implied = check_spec_one(key, spec, regs), K.IMPLIED.get(key)
    if checked["name"] == implied and checked == check_spec_one(key, {"name": implied}, regs):
        return None  # `{name: eager, device: trained}` is the key left out: one cell, one id
    return checked


EXTRA_CHECKS = {"weights": weights.checked}  # Key.extra parameters, and what checks them


def check_spec_one(key: str, spec: dict, regs: dict[str, Registry], extra: bool = True) -> dict:
    """A spec's name and parameters checked, defaults filled in; its key's `extra`
    parameters (a model's weights) checked too, or kept as they are (`extra=False`: read
    from a record, where they are already checked)."""
    params = {k: v for k, v in spec.items() if k != "name"}
    given = {k: params.pop(k) for k in K.BY_NAME[key].extra if params.get(k) not in OFF}
    params = {k: v for k, v in params.items() if k not in K.BY_NAME[key].extra}
    for p in regs[key].get(spec["name"]).params:
        if takes_cell_config(p) and p.name in params:  # a teacher: a cell config of its own
            params[p.name] = resolve_teacher(params[p.name], regs)
    checked = {"name": spec["name"], **regs[key].check(spec["name"], params,
                                                       K.BY_NAME[key].extra)}
    checked.update({k: EXTRA_CHECKS[k](v) if extra else v for k, v in given.items()})
    preflight = getattr(regs[key].info(spec["name"]), "preflight", None)
    if preflight is not None:
        try:  # files and roots a dataset needs: before anything runs, not once per seed
            preflight(checked)
        except Exception as exc:  # noqa: BLE001 - whatever it found missing, said as the user's error
            raise RegistryError(str(exc)) from None
    return checked


TEACHER_KEYS = K.teacher_keys("own")  # what a teacher sets itself (the rest: its student's)


def resolve_teacher(teacher: Any, regs: dict[str, Registry]) -> dict:
    """A teacher is a cell of its own (model, optimizer, training); it shares the student's
    data, so it takes no dataset, preprocessing or compression keys."""
    if not isinstance(teacher, dict):
        raise RegistryError(f"distill teacher must be a mapping with model, optimizer, train; "
                            f"got {teacher!r}")
    bad = [k for k in teacher if k not in TEACHER_KEYS]
    if bad:
        raise RegistryError(f"distill teacher key '{bad[0]}' is not allowed; a teacher takes "
                            f"{', '.join(TEACHER_KEYS)} (it uses the student's data)")
    if teacher.get("model") is None:
        raise NestedError("teacher.model", RegistryError(
            "a teacher needs a model: the network whose outputs the student learns from "
            "(trained here, or loaded with weights:)"))
    out = {}
    for key in TEACHER_KEYS:  # what it does not name, it gets as a cell does (Adam)
        try:
            norm = normalize(key, teacher.get(key, copy.deepcopy(K.DEFAULTS.get(key))))
            out[key] = check_spec(key, norm, regs)
        except (RegistryError, ValidationError) as exc:
            raise NestedError(f"teacher.{key}", exc) from None
    return out


# ---------------------------------------------------------------- expansion

def _split_dotted(key: str) -> tuple[str, str | None]:
    head, _, param = key.partition(".")
    return head, (param or None)


def _normalize_axis_value(key: str, value: Any):
    head, param = _split_dotted(key)
    if param is not None:
        if head not in CELL_KEYS:
            raise RegistryError(f"unknown cell key '{head}'{closest(head, CELL_KEYS)}")
        return value
    return normalize(head, value)


def merge(base: dict, key: str, value: Any) -> None:
    """Apply one (possibly dotted) key onto a cell dict in place."""
    head, param = _split_dotted(key)
    if param is not None:  # a technique the cell does not name yet: its default's (Adam's)
        current = base.get(head) or copy.deepcopy(K.DEFAULTS.get(head))
        if head in LIST_KEYS:  # a list of techniques: the dotted key needs exactly one
            if not current or len(current) != 1:
                raise RegistryError(f"'{key}' sets a parameter of the one {head} technique, but "
                                    f"{len(current or [])} are chosen; write the list out instead")
            base[head] = [{**current[0], param: value}]
            return
        if current is None:
            raise RegistryError(f"'{key}' sets a parameter but no {head} is chosen")
        base[head] = {**current, param: value}
        return
    old = base.get(head)
    if head == "train":
        base[head] = {**(old or {}), **value}
    elif head in SINGLE_KEYS and value is not None and old and old.get("name") == value["name"]:
        base[head] = {**old, **value}  # same technique: the cell refines the default's params
    else:
        base[head] = value


def resolve_cell(defaults: dict, overrides: dict, regs: dict[str, Registry],
                 require=K.REQUIRED) -> dict:
    cell: dict = {}
    for key, value in defaults.items():
        merge(cell, key, _normalize_axis_value(key, value))
    # a technique first, then the parameters set on it (`optimizer: sgd` with `optimizer.lr`,
    # in either order): a dotted key set before its technique would be dropped with it
    for key, value in sorted(overrides.items(), key=lambda kv: "." in kv[0]):
        merge(cell, key, _normalize_axis_value(key, value))
    for key in require:
        if cell.get(key) is None:
            raise RegistryError(f"no {key} chosen (set it in defaults or the matrix)")
    for key, value in K.DEFAULTS.items():
        if cell.get(key) is None:
            cell[key] = copy.deepcopy(value)
    out = {}
    for key in CELL_KEYS:
        value = check_spec(key, cell.get(key), regs)
        if value or key not in LATER_KEYS:
            out[key] = value
    out["train"] = TrainConfig(**out["train"]).model_dump()
    if out.get("dataset") and out.get("model"):
        _check_compatible(out, regs)
    return out


def _streamed_preprocess(specs: list[dict], dname: str, regs: dict[str, Registry]) -> None:
    """A split streamed from files is never whole in memory: only preprocessing that reads
    the labels alone applies (subsample); scaling is the dataset's own (mean / std)."""
    reg = regs["preprocess"]
    for spec in specs:
        if not reg.info(spec["name"]).streams:
            fit = [n for n in reg.names() if reg.info(n).streams and n != "none"]
            raise RegistryError(f"preprocess '{spec['name']}' cannot apply to dataset "
                                f"'{dname}': it streams its training split from files, never "
                                f"whole in memory, and only {', '.join(fit)} (which reads the "
                                "labels alone) applies to it; the dataset's own parameters "
                                "scale and augment its images, or `augment`")


def _check_compatible(cell: dict, regs: dict[str, Registry]) -> None:
    """Inputs the dataset gives must suit the model and the augmentations; the loss and
    distillation must suit the task."""
    dname, mname = cell["dataset"]["name"], cell["model"]["name"]
    dinfo = regs["dataset"].info(dname)
    kind = dinfo.input_from(cell["dataset"]) if dinfo.input_from is not None else dinfo.input
    task = task_of(cell["dataset"])
    _model_fits(cell["model"], "model", dname, kind, task, regs)
    teacher = (cell.get("distill") or {}).get("teacher")
    if teacher:  # it reads the student's inputs and scores the student's task
        _model_fits(teacher["model"], "distill teacher's model", dname, kind, task, regs)
    if dinfo.workers is not None:
        _streamed_preprocess(cell.get("preprocess") or [], dname, regs)
    if cell["train"].get("folds") and dinfo.fixed_validation:
        raise RegistryError(f"cv does not apply to dataset '{dname}': it fixes its validation "
                            "split by position (run without cv)")
    prune = cell.get("prune")
    if prune and regs["prune"].info(prune["name"]).structured \
            and not regs["model"].info(mname).channels:
        raise RegistryError(f"prune '{prune['name']}' removes channels, which model '{mname}' "
                            "does not have in a form the dependency graph reaches; use an "
                            "unstructured pruner (l1_unstructured)")
    if cell.get("preprocess") and kind == "tokens":
        raise RegistryError(f"preprocess cannot apply to dataset '{dname}': its inputs are "
                            "token ids (scaling or clipping them would name other tokens); "
                            "use the dataset's own parameters (tokenizer, max_length)")
    for spec in (cell.get("preprocess") or [])[:-1]:
        if regs["preprocess"].info(spec["name"]).last:
            raise RegistryError(f"preprocess '{spec['name']}' must come last in the list "
                                "(it changes how the inputs are stored)")
    loss, distill = cell.get("loss"), cell.get("distill")
    unfit = suits(task, loss=loss["name"] if loss else None,
                  distill=distill["name"] if distill else None)
    if unfit:
        raise RegistryError(f"{unfit}, but dataset '{dname}' is a {task} task")
    backend = cell["backend"]["name"]
    _check_runtime(cell, regs)
    if distill and regs["backend"].info(backend).ranks:
        raise RegistryError(f"distill with backend '{backend}' (several ranks) is not supported: "
                            "every rank would train its own teacher; use cpu or cuda")
    for aug in cell.get("augment") or []:
        inputs = regs["augment"].info(aug["name"]).inputs
        if kind is not None and kind not in inputs:
            raise RegistryError(f"augment '{aug['name']}' applies to {'/'.join(inputs)} inputs, "
                                f"not to dataset '{dname}' ({kind})")


def _model_fits(model: dict, who: str, dname: str, kind: str | None, task: str,
                regs: dict[str, Registry]) -> None:
    """The model reads the inputs the dataset gives and is made for its task."""
    mname, minfo = model["name"], regs["model"].info(model["name"])
    if kind is not None and kind not in minfo.accepts:
        fitting = [e.name for e in regs["model"].entries() if kind in e.info.accepts]
        fn = regs["model"].get(mname).fn
        yours = "" if fn.__module__.startswith("modelopt.") else (
            f" (a model of yours that takes them: register it in a plugin with "
            f"MODELS.register({mname.split(':')[-1]!r}, accepts=({kind!r},)))")
        raise RegistryError(f"{who} '{mname}' takes {'/'.join(minfo.accepts)} inputs but "
                            f"dataset '{dname}' gives {kind} inputs; models for it: "
                            f"{', '.join(fitting)}{yours}")
    setting = model.get(minfo.tasks_by) if minfo.tasks_by else None
    gives = dict(minfo.tasks_of).get(setting, minfo.tasks)
    if gives and task not in gives:
        fitting = [e.name for e in regs["model"].entries()
                   if kind in e.info.accepts and (not e.info.tasks or task in e.info.tasks)]
        made = f" with {minfo.tasks_by}: {setting}" if setting in dict(minfo.tasks_of) else ""
        raise RegistryError(f"{who} '{mname}'{made} is made for {'/'.join(gives)} but dataset "
                            f"'{dname}' is a {task} task; models for it: {', '.join(fitting)}")


def _check_runtime(cell: dict, regs: dict[str, Registry]) -> None:
    """The runtime a cell ships on must carry out what its quantizer asks for (the
    quantizer's intent, the runtime's `refuses`): said when the suite loads."""
    quantize = cell.get("quantize")
    if not quantize:
        return
    deploy = cell.get("deploy") or {"name": K.BY_NAME["deploy"].implied}
    cannot = getattr(regs["deploy"].build_spec(deploy), "cannot", None)
    why = cannot(regs["quantize"].build_spec(quantize)) if cannot is not None else None
    if why:
        raise RegistryError(f"quantize '{quantize['name']}' cannot ship on deploy "
                            f"'{deploy['name']}': {why} (a matrix leaves the pair out with "
                            f"exclude: [{{quantize: {quantize['name']}, deploy: "
                            f"{deploy['name']}}}])")


def _matches(combo: dict, pattern: dict) -> bool:
    return all(k in combo and combo[k] == v for k, v in pattern.items())


def _excludes(entry: dict, combo: dict) -> bool:
    """An exclude entry names combinations by what it writes, as `baseline:` does (match.py):
    `prune: l1_structured` removes every l1_structured value, whatever its parameters (the
    plan table shows them by that name)."""
    return all(k in combo and within(v, combo[k]) for k, v in entry.items())


def expand(matrix: dict[str, list], include: list[dict], exclude: list[dict],
           merged: list | None = None, unused: list | None = None) -> list[dict]:
    """GitHub Actions' strategy.matrix: product, then exclude, then include. An include
    entry that joins existing combinations (rather than adding one) is noted in `merged` as
    (entry index, the original combinations it changed): users often expect a new cell.
    Entries that do nothing (an exclude that matches no combination, an include whose
    values every combination it joins already has) are noted in `unused` as words."""
    keys = list(matrix)
    combos = [dict(zip(keys, values)) for values in itertools.product(*matrix.values())]
    if not keys:
        combos = []
    for i, ex in enumerate(exclude):
        if unused is not None and not any(_excludes(ex, c) for c in combos):
            unused.append(f"exclude[{i}] matches no matrix combination: it removes nothing")
    combos = [c for c in combos if not any(_excludes(ex, c) for ex in exclude)]
    originals = [dict(c) for c in combos]
    extra = []
    for i, inc in enumerate(include):
        joined = []
        for orig, combo in zip(originals, combos):
            # an include joins a combination when it overwrites none of its original values
            if all(orig[k] == v for k, v in inc.items() if k in orig):
                combo.update(inc)
                joined.append(orig)
        if not joined:
            extra.append(dict(inc))
        elif all(_matches(orig, inc) for orig in joined):
            if unused is not None:
                unused.append(f"include[{i}] changes nothing: every combination it matches "
                              "already has its values")
        elif merged is not None:
            merged.append((i, joined))
    return combos + extra


def names_by_path(config: dict) -> bool:
    """Whether the cell names a factory by import path (package.module:function)."""
    specs = [config.get(k) for k in SINGLE_KEYS] + [s for k in LIST_KEYS
                                                    for s in config.get(k) or []]
    return any(isinstance(s, dict) and ":" in str(s.get("name", "")) for s in specs)


def recorded_choices(cell: Any, keys: tuple[str, ...], trusted: frozenset[str] | None
                     ) -> dict[str, Choice]:
    """Typed choices of these keys of a cell config read from a results file (data from
    elsewhere), checked against the registries. A factory named by import path is imported
    only if the user's suite names it (`trusted`; None: all). Raises ValueError saying why
    it cannot be used."""
    if not isinstance(cell, dict) or not isinstance(cell.get("model"), dict):
        raise ValueError("its record has no model config")
    out = {}
    for key in keys:
        spec = cell.get(key)
        if spec is None:
            continue
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str):
            raise ValueError(f"its record's {key} has no name")
        if ":" in name and trusted is not None and name not in trusted:
            # never a hint to trust its module: the results file chose the function
            raise ValueError(f"its {key} is a factory named by import path in the results "
                             "file, which is never imported from there: give --suite with "
                             "the suite file that names it, if it is your own, to time it")
        try:
            out[key] = Choice.of(key, check_spec_one(key, spec, K.BY_KEY, extra=False))
        except RegistryError as exc:
            raise ValueError(f"{key}: {exc} (a plugin's? give --suite SUITE.yaml or "
                             "--plugins MODULE)") from None
    return out


cell_id = identity  # a hash of what the resolved config sets (spec/cell.py)
