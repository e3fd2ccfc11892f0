"""`match_budget: true`: rows that train as long as the compressed cells do, without the
compression, so that "pruning helped" or "distillation helped" cannot be a training budget.

- a cell whose pruning fine-tunes `finetune_steps` gets its dense counterpart (no pruning,
  no quantization) trained that many steps more: a cell with `steps: 0` (trained weights)
  trains them with the fine-tune's own optimizer and schedule where it names them, so the
  row is "your model, fine-tuned the same way, unpruned";
- a distillation cell gets its student trained alone (no teacher) for the same steps.
"""

from __future__ import annotations

from modelopt.spec.cell import Cell
from modelopt.spec.schema import SuiteError


def matched(cells: list[Cell], path: str) -> list[Cell]:
    """The rows `match_budget` adds to `cells`, each once, none that is already a cell."""
    have = {c.cell_id for c in cells}
    out: list[Cell] = []
    for cell in cells:
        for row in (_unpruned(cell, path), _undistilled(cell)):
            if row is not None and row.cell_id not in have:
                have.add(row.cell_id)
                out.append(row)
    return out


def _unpruned(cell: Cell, path: str) -> Cell | None:
    prune = cell.compress.prune
    extra = int(prune.params.get("finetune_steps", 0)) if prune else 0
    if not extra:
        return None
    settings = cell.train.settings
    where = f"cell {cell.cell_id} ({prune.name}, finetune_steps {extra})"
    if settings.steps is None:
        raise SuiteError(path, "match_budget", f"{where} trains for epochs; give train.steps "
                         "so that a dense row can train the same number of steps")
    own = settings.finetune_optimizer is not None or settings.finetune_schedule is not None
    specs: dict = {"prune": None, "quantize": None, "distill": None}
    if settings.steps and own:
        raise SuiteError(path, "match_budget", f"{where} trains {settings.steps} steps, then "
                         "fine-tunes with its own optimizer or schedule: one dense row cannot "
                         "train both ways; add the row you mean to `include` instead")
    if not settings.steps and own:
        specs["optimizer"] = cell.train.finetune_optimizer.spec()
        schedule = cell.train.finetune_schedule
        specs["schedule"] = schedule.spec() if schedule else None
    specs["train"] = {**settings.model_dump(), "steps": settings.steps + extra,
                      "finetune_optimizer": None, "finetune_schedule": None}
    return cell.replaced(**specs)


def _undistilled(cell: Cell) -> Cell | None:
    if cell.train.distill is None:
        return None
    return cell.replaced(distill=None)
