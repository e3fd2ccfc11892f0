"""What a cell's training says that its types cannot check: settings that would quietly
undo a technique (a schedule stepped on a validation score there is none of, a target never
checked) are refused when the suite loads; settings that are legal but rarely meant (a
warm-up longer than the training, a model measured untrained) are warned of."""

from __future__ import annotations

import copy

from modelopt.spec.cell import Cell
from modelopt.spec.registries import CELL_CHECKS, OPTIMIZERS, SCHEDULES, spans_ranks
from modelopt.spec.registry import RegistryError
from modelopt.spec.schema import DEFAULT_STEPS

# tasks whose validation score is at most 1 (accuracy, R²): a target above it is a percentage
FRACTION_SCORES = ("classification", "regression")


def needs_validation(config: dict) -> None:
    """A target and an on-evaluation schedule (plateau) read the validation score; without
    a validation split the target is never reached and the schedule steps on nothing."""
    train = config["train"]
    if train["val_fraction"] > 0 or train["folds"] > 0:
        return
    if train.get("target") is not None:
        raise RegistryError("train.target is a validation score, and val_fraction: 0 leaves no "
                         "validation split: it would never be reached (give val_fraction > 0)")
    for where, schedule in (("schedule", config.get("schedule")),
                            ("train.finetune_schedule", train.get("finetune_schedule"))):
        if isinstance(schedule, dict) and SCHEDULES.info(schedule["name"]).on_eval:
            raise RegistryError(f"{where} '{schedule['name']}' steps on the validation score, and "
                             "val_fraction: 0 leaves no validation split: it would cut the rate "
                             "on a timer (give val_fraction > 0, or another schedule)")


CELL_CHECKS.append(needs_validation)


def divides_across_ranks(config: dict) -> None:
    """Each rank takes an equal share of every batch: DDP averages the ranks' gradients with
    equal weight, so unequal shares would weigh samples unequally (and a rank with none
    would read NaN)."""
    world = config["backend"].get("world_size")
    batch = config["train"]["batch_size"]
    full = OPTIMIZERS.info(config["optimizer"]["name"]).full_batch  # batch_size unused
    if spans_ranks(config["backend"]) and world and batch % world and not full:
        raise RegistryError(f"train.batch_size {batch} does not divide among backend "
                            f"{config['backend']['name']}'s world_size {world} ranks: give a "
                            f"multiple of {world} (each rank takes batch_size / world_size)")


CELL_CHECKS.append(divides_across_ranks)


def warnings(cells: list[Cell], named: dict[str, str] | None = None,
             defaults: dict | None = None, regs=None) -> tuple[str, ...]:
    """The suite's warnings about its cells' training, each naming its cells (`named`: as
    the matrix wrote them, else by id); `defaults`: the suite's, as written."""
    found: dict[str, list[str]] = {}
    builtin = _teachers_defaults(defaults or {}, regs)
    for c in cells:
        # a teacher is trained as a cell of its own, by the same defaults (1,000 steps)
        teacher = [f"its distill teacher: {why} (in the teacher's own keys: `distill: "
                   "{name: kd, teacher: {model: ..., train: ...}}`)"
                   for why in _odd(c.teacher(), "it teaches as")] \
            if c.train.distill is not None else []
        for why in _odd(c) + teacher + _not_the_suites(c, builtin):
            found.setdefault(why, []).append((named or {}).get(c.cell_id) or c.cell_id)
    return tuple(f"{len(ids)} cell(s) ({'; '.join(ids[:4])}{' ...' if len(ids) > 4 else ''})"
                 f": {why}" for why, ids in found.items())


def _odd(c: Cell, measured: str = "they measure the model as") -> list[str]:
    settings, out = c.train.settings, []
    steps = settings.steps if settings.steps is not None else (
        None if settings.epochs else DEFAULT_STEPS)
    if steps == 0 and not _loads(c):
        out.append(f"train 0 steps and load no weights: {measured} its factory initialises it "
                   "(random weights, unless your factory loads its own); name the file with "
                   "`model: {name: ..., weights: PATH}`")
    if settings.steps is None and not settings.epochs and c.model.params.get("weights"):
        out.append(f"load trained weights and train them {DEFAULT_STEPS} more steps (the "
                   "default; your model fine-tuned, not as you trained it): `train: {steps: "
                   "0}` measures it as loaded, and naming the steps says you mean to fine-tune")
    schedule = c.train.schedule
    if schedule is not None and steps:
        window = {"warmup_cosine": "warmup_steps", "step": "step_size"}.get(schedule.name)
        if window and schedule.params.get(window, 0) >= steps:
            out.append(f"schedule {schedule.name}'s {window} ({schedule.params[window]}) is "
                       f"not below the {steps} training steps: the rate "
                       + ("never finishes warming up" if window == "warmup_steps" else
                          "never changes") + " (set it below the steps)")
    if settings.target is not None and settings.target > 1 and c.task in FRACTION_SCORES:
        out.append(f"train.target {settings.target:g} is above 1, and a {c.task} validation "
                   "score (accuracy, R²) is at most 1: it is never reached (0.8 is 80 %)")
    return out


# how a teacher is optimised: what it does not name is the built-in default's, never the
# suite's defaults' (its training is its own; the student's data it shares)
HOW = ("optimizer", "schedule", "regularization", "loss")


def _teachers_defaults(defaults: dict, regs) -> dict[str, tuple]:
    """Per key of HOW the suite's defaults set otherwise than the built-in default:
    (the built-in's, the suite's), checked as a teacher's are."""
    from modelopt.spec import keys as K
    from modelopt.spec.cells import check_spec, normalize

    out = {}
    for key in HOW:
        if regs is None or defaults.get(key) is None:
            continue
        builtin = check_spec(key, normalize(key, copy.deepcopy(K.DEFAULTS.get(key))), regs)
        theirs = check_spec(key, normalize(key, copy.deepcopy(defaults[key])), regs)
        if theirs != builtin:
            out[key] = (builtin, theirs)
    return out


def _not_the_suites(c: Cell, builtin: dict[str, tuple]) -> list[str]:
    from modelopt.spec.patterns import short

    teacher = c.train.distill.params.get("teacher") if c.train.distill is not None else None
    return [f"its distill teacher trains with {key} {short(mine)}, the suite's defaults with "
            f"{short(theirs)}: a teacher takes only the keys it names (the built-in defaults "
            f"otherwise); name its `{key}:` as you mean it" for key, (mine, theirs) in
            builtin.items() if teacher and teacher.get(key) == mine]


def _loads(c: Cell) -> bool:
    """Whether the model loads trained weights: `weights:`, or its own parameter (hf's path)."""
    by = c.model.info.trained_by
    return bool(c.model.params.get("weights") or (by and c.model.params.get(by)))
