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


def base_row(cid, seed, cell, **metrics):
    return {"suite": "s", "cell_id": cid, "seed": seed, "status": "ok", "error": None,
            "cell": {"dataset": {"name": "mnist1d"}, "model": {"name": "mlp"}, **cell},
            "curves": [{"phase": "train", "step": s, "val_score": 0.1 * s, "seconds": s / 2}
                       for s in (1, 2, 3)],
            "extra": {}, "env": {}, "started_at": None, "duration_s": 1, **metrics}


def test_sparsity_plot_and_curves_plot_render():
    rows = [base_row("d", s, {"prune": None}, accuracy=0.7, sparsity=0.0) for s in (0, 1)]
    for amount in (0.5, 0.9):
        for s in (0, 1):
            rows.append(base_row(f"p{amount}", s, {"prune": {"name": "l1_unstructured",
                                                              "amount": amount, "global": True,
                                                              "rounds": 1}},
                                 accuracy=0.7 - amount / 5, sparsity=amount))
    df = pd.DataFrame(rows)
    for fig in (plots.sparsity_vs_accuracy(report.aggregate(df)), plots.training_curves(df)):
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        assert buf.tell() > 10_000
        assert all(ax.get_xlabel() for ax in fig.axes)


def test_distill_table_pairs_students_with_scratch():
    kd = {"name": "kd", "temperature": 2.0, "alpha": 0.5, "teacher": {"model": {"name": "cnn"}}}
    rows = [base_row("s", s, {"distill": None}, accuracy=a) for s, a in ((0, 0.60), (1, 0.62))]
    rows += [base_row("k", s, {"distill": kd}, accuracy=a, teacher_accuracy=0.9)
             for s, a in ((0, 0.65), (1, 0.67))]
    table = report.distill_table(report.aggregate(pd.DataFrame(rows)))
    assert "T=2, α=0.5" in table and "90.0" in table and "61.0 ± 1.4" in table
    assert "+5.0 pt" in table


def test_heatmap_learning_curve_grad_norms_confusion_render():
    rows = []
    for act in ("relu", "tanh"):
        for hidden in (8, 16):
            for s in (0, 1):
                r = base_row(f"{act}{hidden}", s,
                             {"model": {"name": "mlp", "activation": act, "hidden": hidden},
                              "preprocess": [{"name": "subsample", "fraction": hidden / 16}]},
                             accuracy=0.5 + hidden / 100, train_samples=hidden * 10,
                             confusion=[[3, 1], [0, 4]])
                r["extra"] = {"grad_norms": [{"step": st, "phase": "train", "0.weight": 1.0 / st,
                                              "2.weight": 0.5} for st in (1, 2, 3)]}
                rows.append(r)
    df = pd.DataFrame(rows)
    agg = report.aggregate(df)
    assert plots.varying_params(list(agg["cell"])) == ["model.activation", "model.hidden",
                                                       "preprocess"]
    figs = dict((slug, fig) for _, slug, fig in plots.suite_figures(df, agg))
    assert {"heatmap", "learning_curve", "grad_norms", "confusion", "curves"} <= set(figs)
    for fig in figs.values():
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        assert buf.tell() > 5_000


def test_relative_columns_against_the_suite_baseline():
    rows = []
    for cid, prune, acc, lat, size in (("dense", None, 0.90, 2.0, 1000),
                                       ("pruned", {"name": "l1_structured"}, 0.88, 1.0, 500)):
        for s in (0, 1):
            rows.append(base_row(cid, s, {"prune": prune}, accuracy=acc, latency_ms_p50=lat,
                                 size_bytes=size))
    page = report.suite_page(pd.DataFrame(rows), "s", baseline={"prune": "none"})
    assert "Baseline for the relative columns" in page
    line = next(x for x in page.splitlines() if x.startswith("| l1_structured"))
    assert "-2.0 pt" in line and "2.00" in line and "0.50" in line


def test_scaling_table():
    rows = []
    for cid, backend, rate in (("one", {"name": "cpu", "threads": 1}, 1000.0),
                               ("two", {"name": "cpu", "threads": 2}, 1500.0),
                               ("ddp", {"name": "ddp", "world_size": 2, "threads": 1}, 1800.0)):
        rows.append(base_row(cid, 0, {"backend": backend}, accuracy=0.5, train_samples_s=rate))
    t = report.scaling_table(report.aggregate(pd.DataFrame(rows)))
    assert "| cpu, 2 threads" in t and "1.50" in t and "0.75" in t and "0.90" in t
