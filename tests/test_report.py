import io

import pandas as pd
import pytest

from modelopt import plots, report


def rows():
    def r(cell, seed, acc, lat, status="ok", error=None):
        return {"suite": "s", "cell_id": cell, "seed": seed, "status": status, "error": error,
                "cell": {"model": {"name": cell}, "dataset": {"name": "mnist1d"},
                         "optimizer": {"name": "adam", "lr": 0.01}, "train": {"steps": 10}},
                "curves": [], "extra": {}, "env": {"torch": "x", "cpu": "c", "device": "cpu"},
                "started_at": "2026-11-23T10:00:00", "duration_s": 1.0,
                "accuracy": acc, "latency_ms_p50": lat, "params": 100}
    return pd.DataFrame([r("mlp", 0, 0.6, 1.0), r("mlp", 1, 0.7, 3.0), r("mlp", 2, 0.8, 2.0),
                         r("cnn", 0, 0.9, 4.0), r("cnn", 1, None, None, "failed", "Boom: x\ny")])


def test_aggregate_mean_std_n():
    agg = report.aggregate(rows()).set_index("cell_id")
    assert agg.loc["mlp", "accuracy"] == pytest.approx(0.7)
    assert agg.loc["mlp", "accuracy_std"] == pytest.approx(0.1)  # sample std (ddof 1)
    assert agg.loc["mlp", "n"] == 3 and agg.loc["cnn", "n"] == 1
    assert agg.loc["cnn", "statuses"] == {"ok": 1, "failed": 1}
    assert agg.loc["cnn", "error"] == "Boom: x"
    assert list(agg["axis:model"]) == ["mlp", "cnn"]


def test_table_and_failed_cells_appear():
    page = report.suite_page(rows(), "s")
    assert "70.0 ± 10.0" in page and "**90.0**" in page
    assert "did not finish ok" in page and "Boom: x" in page


@pytest.mark.parametrize("fn", [plots.accuracy_vs_latency, plots.accuracy_vs_params])
def test_plots_write_a_png(fn):
    fig = fn(report.aggregate(rows()))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=plots.DPI)
    w, h = fig.get_size_inches() * plots.DPI
    assert (w, h) == (960, 600) and buf.tell() > 10_000


def test_pareto_front():
    assert plots.pareto_front([1, 2, 3, 4], [0.5, 0.4, 0.9, 0.8]) == [0, 2]
