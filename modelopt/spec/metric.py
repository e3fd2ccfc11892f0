"""What a figure is: the declaration the metric table (results/metrics.py) holds for each.

It lives here, below techniques, so that an entry that computes figures of its own (a task:
spec/tasks.py) can declare them where it is registered; the table and its readers are
results'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

# How much worse a figure may get before the gate calls it a regression:
#   relative - a fraction of the baseline (timings, memory, errors)
#   points   - absolute, in the units of a fraction (accuracy 0.01 = one point)
#   absolute - absolute, in the metric's own units (R²)
#   exact    - counts: any change in the worse direction
#   none     - descriptive: reported, never gated
Tolerance = Literal["relative", "points", "absolute", "exact", "none"]
TOLERANCES = get_args(Tolerance)


FORMATS = r"pct|int|si|bool|none|[fg]\d{1,2}"


@dataclass(frozen=True)
class Metric:
    name: str
    title: str
    fmt: str = "g3"  # report formatter: pct, int, si, f<digits>, g<digits>, bool, none
    higher_is_better: bool | None = None  # None: no direction (descriptive)
    kind: Tolerance = "none"
    tolerance: float = 0.0
    unit: str = ""
    timing: bool = False  # a wall-clock figure: varies with the machine, not only the code

    def __post_init__(self):
        # a declaration may come from a results directory (suite.json): a format is one of
        # these, its precision two digits at most (`f99999999` wrote a 400 MB page)
        if not isinstance(self.fmt, str) or not re.fullmatch(FORMATS, self.fmt):
            raise ValueError(f"metric '{self.name}': format {self.fmt!r} is none of pct, int, "
                             "si, bool, none, f<digits>, g<digits> (at most 2 digits)")
        # and each field what the gate and the pages read it as: a tolerance of "x" raised
        # in compare, NaN never regressed, `higher_is_better: "no"` read as true
        wrong = next((f"{key} {value!r}" for key, value, ok in (
            ("name", self.name, isinstance(self.name, str)
             and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", self.name)),
            ("title", self.title, isinstance(self.title, str) and 0 < len(self.title) <= 80),
            ("unit", self.unit, isinstance(self.unit, str) and len(self.unit) <= 20),
            ("higher_is_better", self.higher_is_better,
             self.higher_is_better is None or isinstance(self.higher_is_better, bool)),
            ("kind", self.kind, self.kind in TOLERANCES),
            ("tolerance", self.tolerance, isinstance(self.tolerance, (int, float))
             and not isinstance(self.tolerance, bool) and 0 <= self.tolerance < float("inf")),
            ("timing", self.timing, isinstance(self.timing, bool))) if not ok), None)
        if wrong:
            raise ValueError(f"metric {str(self.name)[:64]!r}: {wrong[:120]} is not a "
                             f"{wrong.split()[0]} modelopt can read")

    @property
    def gated(self) -> bool:
        return self.kind != "none"

    def with_tolerance(self, kind: Tolerance, tolerance: float) -> "Metric":
        return Metric(self.name, self.title, self.fmt, self.higher_is_better, kind, tolerance,
                      self.unit, self.timing)


# `int8_path` of PT2E's int8 program run eagerly: quantize / dequantize around float kernels,
# a check of int8's numerics and never its speed (techniques record it, results read it)
INT8_REFERENCE = "reference"
