import json

import pandas as pd

from modelopt.results import page as pages
from modelopt.results import report, tables
from modelopt.run.cell import time_to_target
from modelopt.spec.suite import parse

BASE = """
name: t
seeds: [0, 1]
defaults:
  dataset: {name: synthetic, n_samples: 200}
  model: linear
  optimizer: adam
  train: {steps: 10, eval_every: 5}
matrix:
  optimizer: [sgd, adam]
"""


def test_tune_expands_each_cell_into_a_group():
    s = parse(BASE + "tune:\n  optimizer.lr: [0.001, 0.01, 0.1]\n")
    assert len(s.cells) == 6
    groups = {}
    for c in s.cells:
        assert c.group["kind"] == "tune"
        groups.setdefault(c.group["id"], []).append(c.as_config()["optimizer"]["lr"])
    assert sorted(map(sorted, groups.values())) == [[0.001, 0.01, 0.1]] * 2


def test_a_tuned_value_a_technique_does_not_take_is_named_with_its_cell():
    import pytest

    from modelopt.spec.schema import SuiteError

    with pytest.raises(SuiteError, match=r"tune \[optimizer=sgd, \{'optimizer.lrr': 0.1\}\]"):
        parse(BASE + "tune:\n  optimizer.lrr: [0.1]\n")
    one = BASE.replace("matrix:\n  optimizer: [sgd, adam]\n", "")  # no axis: no cell label
    with pytest.raises(SuiteError, match=r"tune \[\{'optimizer.lrr': 0.1\}\]: optimizer"):
        parse(one + "tune:\n  optimizer.lrr: [0.1]\n")


def test_a_techniques_parameter_is_tuned_only_where_the_cell_names_it():
    """`distill.temperature` tunes the kd cells; the from-scratch cell beside them runs
    once, in a group of its own, so the two sit in one table."""
    import pytest

    from modelopt.spec.schema import SuiteError

    kd = BASE.replace("  optimizer: [sgd, adam]\n",
                      "  distill: [none, {name: kd, teacher: {model: linear, "
                      "train: {steps: 5}}}]\n")
    s = parse(kd + "tune:\n  distill.temperature: [2, 8]\n  optimizer.lr: [0.01, 0.1]\n")
    values = sorted(json.dumps(c.group["values"], sort_keys=True) for c in s.cells)
    scratch = [v for v in values if "temperature" not in v]
    assert len(s.cells) == 6 and len(scratch) == 2  # 2 x 2 kd settings, 2 rates from scratch
    assert all(c.group["kind"] == "tune" for c in s.cells)
    with pytest.raises(SuiteError, match=r"tune.prune.amount: sets a parameter of prune, and "
                                         r"no cell names one"):
        parse(kd + "tune:\n  prune.amount: [0.2, 0.5]\n")


def test_cv_expands_into_folds_with_disjoint_validation():
    from modelopt.techniques.data import load

    s = parse(BASE + "cv: {folds: 3}\n")
    assert len(s.cells) == 6 and {c.as_config()["train"]["fold"] for c in s.cells} == {0, 1, 2}
    vals = [load({"name": "synthetic", "n_samples": 200}, 0, 0.1, 3, f).x_val for f in range(3)]
    rows = [{tuple(r.tolist()) for r in v} for v in vals]
    assert sum(len(r) for r in rows) == 150 and not (rows[0] & rows[1] or rows[1] & rows[2])


def row(cell, seed, lr, val, test):
    return {"suite": "t", "cell_id": cell, "seed": seed, "status": "ok", "error": None,
            "cell": {"dataset": {"name": "mnist1d"}, "model": {"name": "mlp"},
                     "optimizer": {"name": "adam", "lr": lr}},
            "group": {"kind": "tune", "id": "g", "values": {"optimizer.lr": lr}},
            "curves": [], "extra": {}, "env": {}, "started_at": None, "duration_s": 1,
            "val_score": val, "accuracy": test}


def test_tune_picks_by_validation_not_test():
    # lr 0.01 is best on validation; lr 0.1 would be best on test: 0.01 must be chosen
    df = pd.DataFrame([row("a", s, 0.01, 0.90, 0.70) for s in (0, 1)] +
                      [row("b", s, 0.1, 0.80, 0.95) for s in (0, 1)])
    best = tables.tuned(report.aggregate(df))
    assert list(best["chosen"]) == ["optimizer.lr=0.01"]
    assert best.iloc[0]["accuracy"] == 0.70
    page = pages.suite_page(df, "t")
    assert "chosen on validation" in page and "optimizer.lr=0.01" in page
    assert "validation split holds" not in page  # records that did not say its size
    page = pages.suite_page(df.assign(val_samples=144), "t")
    assert "The validation split holds 144 samples (one sample: 0.69 pt of accuracy)" in page


def test_a_setting_that_lost_seeds_is_not_chosen_over_one_that_kept_them():
    """lr 0.1's surviving seed scores best on validation, its other seed diverged: the
    mean over survivors flatters it, so lr 0.01 (both seeds ok) is chosen."""
    df = pd.DataFrame([row("a", s, 0.01, 0.85, 0.80) for s in (0, 1)] +
                      [row("b", 0, 0.1, 0.95, 0.90),
                       {**row("b", 1, 0.1, None, None), "status": "diverged"}])
    assert list(tables.tuned(report.aggregate(df))["chosen"]) == ["optimizer.lr=0.01"]


def test_the_tuned_table_says_a_target_not_reached_and_counts_the_seeds_that_did():
    """The tuned setting's steps to target are its whole budget where no seed reached the
    target: said as not reached, and its seeds counted (not 0.00 ± a spread)."""
    df = pd.DataFrame([{**row("a", s, 0.01, 0.85, 0.80), "target_reached": False,
                        "steps_to_target": 900} for s in (0, 1)])
    text = tables.tune_table(report.aggregate(df))
    line = next(x for x in text.splitlines() if "optimizer.lr=0.01" in x)
    assert "not reached" in line and "0 of 2" in line and "0.00" not in line


def test_time_to_target():
    curves = [{"phase": "train", "step": s, "val_score": v, "seconds": s / 10}
              for s, v in [(10, 0.5), (20, 0.8), (30, 0.9)]]
    assert time_to_target(curves, 0.8, 3.0, 30) == {
        "target_reached": True, "time_to_target_s": 2.0, "steps_to_target": 20}
    assert time_to_target(curves, 0.95, 3.0, 30) == {
        "target_reached": False, "time_to_target_s": 3.0, "steps_to_target": 30}
    assert time_to_target(curves, None, 3.0, 30) == {}


def test_the_cross_validation_table_puts_the_best_on_held_out_folds_first():
    """It listed cells in matrix order, the best on validation anywhere (the tuned table is
    best-first)."""
    def fold(cell, name, k, val):
        return {**row(cell, 0, 0.01, val, 0.5), "cell": {**row(cell, 0, 0.01, 0, 0)["cell"],
                                                         "optimizer": {"name": name}},
                "group": {"kind": "cv", "id": name, "values": {"train.fold": k}}}

    df = pd.DataFrame([fold(f"a{k}", "adamw", k, 0.70) for k in range(2)]
                      + [fold(f"b{k}", "sgd", k, 0.90) for k in range(2)]
                      + [fold(f"c{k}", "adam", k, 0.80) for k in range(2)])
    text = tables.cv_table(df, report.aggregate(df))
    order = [name for line in text.splitlines() for name in ("adamw", "sgd", "adam")
             if f"| {name} " in line]
    assert order == ["sgd", "adam", "adamw"], text
    assert "| reference " in text.splitlines()[2]  # the first row's Δ is against itself


def test_cross_validated_rows_differ_by_seed_each_a_whole_cross_validation():
    """Each row's test figure less the first row's: per seed the mean over its folds, paired
    by seed, a t-interval over the seeds (the folds of one seed are not independent)."""
    from modelopt.results import stats

    def fold(cell, name, k, seed, val, test):
        return {**row(cell, seed, 0.01, val, test),
                "cell": {**row(cell, 0, 0.01, 0, 0)["cell"], "optimizer": {"name": name}},
                "group": {"kind": "cv", "id": name, "values": {"train.folds": 3, "train.fold": k}}}

    keys = [(k, s) for k in range(3) for s in range(3)]
    base = [0.80 + 0.01 * (k - s) for k, s in keys]
    drop = [0.02 + 0.005 * s + 0.002 * k for k, s in keys]
    df = pd.DataFrame([fold(f"a{k}", "adam", k, s, 0.9, b) for (k, s), b in zip(keys, base)]
                      + [fold(f"b{k}", "sgd", k, s, 0.7, b - d)
                         for (k, s), b, d in zip(keys, base, drop)])
    text = tables.cv_table(df, report.aggregate(df))
    by_seed = [[b for (k, s), b in zip(keys, base) if s == seed] for seed in range(3)]
    cur = [[b - d for (k, s), b, d in zip(keys, base, drop) if s == seed] for seed in range(3)]
    mean = [sum(x) / 3 for x in by_seed]
    lo, hi = stats.paired_ci(mean, [sum(x) / 3 for x in cur])
    sgd = next(line for line in text.splitlines() if "| sgd " in line)
    assert f"-2.7 pt [{100 * lo:+.1f}, {100 * hi:+.1f}]" in sgd, text
    assert "test accuracy %" in text.splitlines()[0] and "fold) %" in text.splitlines()[0]
    # seeds that disagree on the sign: the interval holds 0, marked ≈ as the headline marks
    mixed = pd.DataFrame([fold(f"a{k}", "adam", k, s, 0.9, b) for (k, s), b in zip(keys, base)]
                         + [fold(f"b{k}", "sgd", k, s, 0.7, b + 0.03 * (s - 1))
                            for (k, s), b in zip(keys, base)])  # per seed -3, 0, +3 pt
    within = next(line for line in tables.cv_table(mixed, report.aggregate(mixed)).splitlines()
                  if "| sgd " in line)
    assert "| ≈ " in within, within
    one = df[df["seed"] == 0]
    assert "(1 seed)" in tables.cv_table(one, report.aggregate(one))
