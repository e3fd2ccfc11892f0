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


def listing() -> str:
    lines = []
    regs = {**plugins.load(), "model weights (model: {..., weights: FILE})": WEIGHTS,
            "tasks (a dataset's)": TASKS}
    for key, reg in regs.items():
        lines.append(f"{key}:")
        for e in reg.entries():
            params = ", ".join(
                f"{p.name}: {describe(p.annotation)}"
                + ("" if p.default is inspect.Parameter.empty else f" = {p.default!r}")
                for p in e.params)
            facts = "".join(f" [{k}={v}]" for k, v in asdict(e.info).items()
                            if v not in (None, False, ()) and not callable(v))  # no code reprs
            lines.append(f"  {e.name}({params}){facts}")
            lines += [f"      {line}".rstrip() for line in e.doc.splitlines()]
    lines.append("train:")
    for name, field in TrainConfig.model_fields.items():
        kind = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        note = (f"  (steps or epochs, not both; neither: {DEFAULT_STEPS} steps)"
                if name in ("steps", "epochs") else "")
        lines.append(f"  {name}: {describe(kind)} = "
                     f"{field.get_default(call_default_factory=True)!r}{note}")
    implied = {k: v["name"] if isinstance(v, dict) else "the task's default"
               for k, v in DEFAULTS.items() if k != "train"}
    lines.append("a cell that does not name them gets: "
                 + ", ".join(f"{k}: {v}" for k, v in implied.items()))
    return "\n".join(lines)
