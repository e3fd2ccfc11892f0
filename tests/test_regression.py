import math

import pytest

from modelopt.run.cell import run_cell
from modelopt.spec.suite import SuiteError, parse


def suite(text):
    return parse("name: r\nseeds: [0]\n" + text)


def test_linear_on_noise_free_regression_fits_exactly():
    s = suite("""
defaults:
  dataset: {name: synthetic_regression, n_samples: 400, n_features: 5, noise: 0.0}
  model: linear
  optimizer: {name: adam, lr: 0.05}
  train: {steps: 400, batch_size: 64, eval_every: 100}
matrix: {model: [linear]}
""")
    out = run_cell(s.cells[0], 0)
    m = out.metrics
    assert m["r2"] > 0.99 and m["r2_best_val"] > 0.99
    assert m["rmse"] == pytest.approx(math.sqrt(m["mse"]))
    for absent in ("accuracy", "f1_macro", "accuracy_best_val"):
        assert absent not in m  # a metric of the other task is absent, never 0


def test_classification_has_no_regression_metrics():
    s = suite("""
defaults:
  dataset: {name: synthetic, n_samples: 200}
  optimizer: adam
  train: {steps: 20, eval_every: 10}
matrix: {model: [linear]}
""")
    m = run_cell(s.cells[0], 0).metrics
    assert "accuracy" in m and not {"r2", "mse", "rmse", "mae"} & set(m)


def test_loss_must_match_the_task():
    with pytest.raises(SuiteError, match="huber"):
        suite("defaults: {dataset: mnist1d, model: mlp, optimizer: adam, loss: huber}\n"
              "matrix: {model: [mlp]}\n")
    s = suite("defaults: {dataset: diabetes, model: mlp, optimizer: adam}\n"
              "matrix: {loss: [mse, {name: huber, delta: 0.5}]}\n")
    assert len(s.cells) == 2


def test_csv_dataset(tmp_path):
    import numpy as np

    from modelopt.techniques.data import load

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    lines = ["a,b,c,y"] + [f"{r[0]},{r[1]},{r[2]},{r.sum()}" for r in x]
    (tmp_path / "t.csv").write_text("\n".join(lines))
    d = load({"name": "csv", "path": str(tmp_path / "t.csv"), "target": "y",
              "task": "regression"}, 0, 0.0)
    assert d.task == "regression" and d.x_train.shape == (40, 3)
    assert abs(float(d.y_train.mean())) < 1e-5  # standardized on the training split


def test_mixed_tasks_are_reported_in_separate_tables(tmp_path):
    import pandas as pd

    from modelopt.results import page as pages

    def row(ds, cid, **metrics):
        return {"suite": "m", "cell_id": cid, "seed": 0, "status": "ok", "error": None,
                "cell": {"dataset": {"name": ds}, "model": {"name": "mlp"}}, "curves": [],
                "extra": {}, "env": {}, "started_at": None, "duration_s": 1, **metrics}
    df = pd.DataFrame([row("diabetes", "a", r2=0.4, rmse=50.0), row("mnist1d", "b", accuracy=0.6)])
    page = pages.suite_page(df, "m")
    assert "## Headline (classification cells)" in page and "## Headline (regression cells)" in page
    sections = {part.split("\n", 1)[0]: part for part in page.split("## ")[1:]}
    for part in ("Headline", "Every figure"):
        assert "R²" not in sections[f"{part} (classification cells)"]
        reg = sections[f"{part} (regression cells)"]
        assert "accuracy" not in reg and "R²" in reg


def test_a_regression_cell_worse_than_the_mean_is_said_on_the_page():
    """R² -20 sat in the wide table like any other figure: below 0 a constant, the test
    targets' mean, predicts better, and the page says so above the tables."""
    import pandas as pd

    from modelopt.results import page as pages

    def row(cid, seed, r2):
        return {"suite": "m", "cell_id": cid, "seed": seed, "status": "ok", "error": None,
                "cell": {"dataset": {"name": "diabetes"}, "model": {"name": "mlp"}},
                "curves": [], "extra": {}, "env": {}, "started_at": None, "duration_s": 1,
                "r2": r2, "rmse": 50.0}
    rows = [row("good", s, 0.45 + 0.01 * s) for s in (0, 1)]
    assert "predict worse than the mean" not in pages.suite_page(pd.DataFrame(rows), "m")
    rows += [row("bad", s, -20.0 - s) for s in (0, 1)]
    page = pages.suite_page(pd.DataFrame(rows), "m")
    assert ("**1 of 2 cell(s) predict worse than the mean**: their test R² is below 0 "
            "(lowest -20.5)") in page


def test_csv_task_follows_the_label_column(tmp_path):
    """String (or integer) labels are classes, floats a regression target, unless told."""

    rows = [f"{i % 7},{(i * 3) % 5},{'cat' if i % 2 else 'dog'},{i * 0.5}" for i in range(60)]
    (tmp_path / "t.csv").write_text("a,b,label,size\n" + "\n".join(rows))
    text = ("name: c\nseeds: [0]\ndefaults:\n  model: mlp\n  train: {steps: 5}\n"
            f"  dataset: {{name: csv, path: {tmp_path}/t.csv, target: TARGET}}\n")
    labels = parse(text.replace("TARGET", "label")).cells[0]
    assert labels.task == "classification"
    numbers = tmp_path / "n.csv"
    numbers.write_text("\n".join(",".join(r.split(",")[:2] + r.split(",")[3:])
                                 for r in (tmp_path / "t.csv").read_text().splitlines()))
    size = parse(text.replace("TARGET", "size").replace("t.csv", "n.csv"))
    assert size.cells[0].task == "regression"
    with pytest.raises(SuiteError, match=r"non-numeric feature columns \['label'\]"):
        parse(text.replace("TARGET", "size"))  # found when the suite loads, not in a cell
    out = run_cell(labels, 0)  # 'could not convert string to float' before
    assert out.status == "ok" and 0 <= out.metrics["accuracy"] <= 1


def test_an_integer_quantity_read_as_classes_is_refused_saying_task_regression(tmp_path):
    """140 prices over 400 rows were 140 classes, and the run failed in every cell with
    scikit-learn's "The least populated classes in y have only 1 member"."""
    rows = [f"{i % 7},{(i * 3) % 5},{100 + (i * 37) % 140}" for i in range(400)]
    (tmp_path / "p.csv").write_text("a,b,price\n" + "\n".join(rows) + "\n5,5,999\n")
    text = ("name: c\nseeds: [0]\ndefaults:\n  model: mlp\n  train: {steps: 5}\n"
            f"  dataset: {{name: csv, path: {tmp_path}/p.csv, target: price}}\n")
    with pytest.raises(SuiteError, match=r"141 classes in 'price' of .*p.csv, and 1 of "
                       r"them have a single sample \(999\).*say `task: regression`"):
        parse(text)
    assert parse(text.replace("target: price", "target: price, task: regression")
                 ).cells[0].task == "regression"


def test_empty_values_in_a_csv_are_refused_naming_where(tmp_path):
    """A blank feature would make training diverge, and a blank integer label would turn
    the classes into a regression target: both are refused when the suite loads."""
    from modelopt.techniques.data import load

    rows = [f"{i % 7},{(i * 3) % 5},{i % 3}" for i in range(60)]
    text = ("name: c\nseeds: [0]\ndefaults:\n  model: mlp\n  train: {steps: 5}\n"
            f"  dataset: {{name: csv, path: {tmp_path}/t.csv, target: y}}\n")
    for line, hole, words in ((3, "5,,1", "'b': 1; first on lines 5"),
                              (40, "5,1,", "'y': 1; first on lines 42")):
        holed = rows[:line] + [hole] + rows[line + 1:]
        (tmp_path / "t.csv").write_text("a,b,y\n" + "\n".join(holed))
        with pytest.raises(SuiteError, match=f"has empty values \\({words}\\); fill or drop"):
            parse(text)
    # past the rows the suite's check reads, the cell that loads the file refuses it
    holed = rows * 20 + ["5,,1"]
    (tmp_path / "t.csv").write_text("a,b,y\n" + "\n".join(holed))
    assert parse(text).cells[0].task == "classification"
    with pytest.raises(ValueError, match="'b': 1; first on lines 1202"):
        load({"name": "csv", "path": str(tmp_path / "t.csv"), "target": "y"}, 0, 0.0)
