import io
import json
import os
import time

import numpy as np
import pandas as pd
import pytest

from modelopt.results import diagnostics, export, labels, plots, report, tables
from modelopt.results import page as pages
from modelopt.spec import outcomes


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
    page = pages.suite_page(rows(), "s")
    assert "70.0 ± 10.0" in page and "**90.0**" in page
    assert "did not finish ok" in page and "Boom: x" in page
    # where no cell finished ok the headline says so, instead of standing empty
    failed = rows().assign(status="failed", accuracy=None, latency_ms_p50=None, error="Boom: x")
    page = pages.suite_page(failed, "s")
    headline = page.split("## Headline")[1].split("##")[0]
    assert "No cell finished ok: nothing to rank" in headline and "Boom: x" in page
    # nor are there figures to draw, pruned cells among them (a sparsity plot of no
    # panel refused the whole report, as "something modelopt does not write")
    failed["cell"] = [{**c, "prune": {"name": "l1_unstructured", "amount": 0.5}}
                      for c in failed["cell"]]
    assert plots.suite_figures(failed, report.aggregate(failed)) == []


def test_a_page_names_every_commit_its_records_came_from():
    """A results directory resumed at another commit holds records of both: the page says
    so, with how many records each has, instead of naming the first record's."""
    df = rows()
    df["env"] = [{"torch": "x", "cpu": "c", "device": "cpu", "git_commit": c}
                 for c in ["aaa1111", "aaa1111", "aaa1111", "bbb2222-dirty", "bbb2222-dirty"]]
    page = pages.suite_page(df, "s")
    assert "**commit** aaa1111 (3 records); bbb2222-dirty (2 records)" in page
    assert "**torch** x ·" in page  # one value as it is
    assert "**commit** aaa1111 ·" in pages.suite_page(df[df["env"].map(
        lambda e: e["git_commit"] == "aaa1111")], "s")
    # a skipped cell (no GPU here) ran nothing: its commit counts, its machine is not a '?'
    df["env"] = [{"git_commit": "aaa1111"}] * 2 + [df["env"][0]] * 3
    page = pages.suite_page(df, "s")
    assert "**torch** x ·" in page and "**commit** aaa1111 ·" in page and "records)" not in page


def test_a_cpu_whose_records_looked_for_fewer_flags_is_named_once():
    """Records from before the flag list grew name the same CPU with fewer flags: the page
    tells it by the flags every record looked for, and a real difference still shows."""
    from modelopt.results.sides import EARLIER_CHECKED

    old = {"torch": "x", "cpu": "Xeon", "cpu_flags": "avx2 avx512_vnni amx_bf16"}
    new = {**old, "cpu_flags": "avx2 avx512_vnni avx512_bf16 amx_bf16",
           "cpu_flags_checked": " ".join(sorted(EARLIER_CHECKED | {"avx512_bf16"}))}
    df = rows()
    df["env"] = [old] * 3 + [new] * 2
    page = pages.suite_page(df, "s")
    assert "**machine**: Xeon, avx2 · avx512_vnni · amx_bf16 (?)" in page, page
    df["env"] = [old] * 3 + [{**new, "cpu_flags": "avx2 avx512_bf16"}] * 2  # no VNNI
    page = pages.suite_page(df, "s")
    assert "Xeon, avx2 · avx512_vnni · amx_bf16 (3 records); Xeon, avx2 (2 records)" in page
    # a record without flags (written before records had them) is no other CPU either, as
    # `compare` reads it: no flag is compared
    df["env"] = [old] * 3 + [{"torch": "x", "cpu": "Xeon"}] * 2
    assert "**machine**: Xeon (?)" in pages.suite_page(df, "s")


def test_a_commit_with_changes_to_the_package_is_marked_dirty(tmp_path):
    import subprocess

    from modelopt.run.runner import git_commit

    def git(*args):
        subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=tmp_path,
                       check=True, capture_output=True)

    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "modelopt").mkdir()
    (tmp_path / "modelopt" / "a.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "c")
    clean = git_commit(tmp_path / "modelopt")
    assert clean and not clean.endswith("-dirty")
    (tmp_path / "notes.txt").write_text("outside the package")  # not modelopt's code
    assert git_commit(tmp_path / "modelopt") == clean
    (tmp_path / "modelopt" / "a.py").write_text("x = 2\n")
    assert git_commit(tmp_path / "modelopt") == clean + "-dirty"
    # asking never writes the user's index (a plain `git status` refreshes it under
    # .git/index.lock, which a killed or timed-out run would leave behind)
    git("add", ".")
    os.utime(tmp_path / "modelopt" / "a.py", (1e9, 1e9))  # stale stat data, same content
    index = (tmp_path / ".git" / "index").stat().st_mtime_ns
    time.sleep(0.05)
    git_commit(tmp_path / "modelopt")
    assert (tmp_path / ".git" / "index").stat().st_mtime_ns == index


@pytest.mark.parametrize("fn", [plots.accuracy_vs_latency, plots.accuracy_vs_params])
def test_plots_write_a_png(fn):
    fig = fn(report.aggregate(rows()))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=plots.DPI)
    w, h = fig.get_size_inches() * plots.DPI
    assert (w, h) == (960, 600) and buf.tell() > 10_000


def test_pareto_front():
    assert plots.pareto_front([1, 2, 3, 4], [0.5, 0.4, 0.9, 0.8]) == [0, 2]
    # beyond noise only: a slower point 0.1 better within a spread of 0.8 is not ringed
    # (static int8's reference path once was, 2.5x slower for 0.1 point)
    xs, ys = [1.0, 2.5, 3.0], [92.4, 92.5, 95.0]
    assert plots.pareto_front(xs, ys) == [0, 1, 2]
    assert plots.pareto_front(xs, ys, [0.8, 0.8, 0.5]) == [0, 2]
    # latency has noise too: grad_clip (61.7 %, 0.0681 ms) is as fast as l1 (60.7 %,
    # 0.0675 ms) within the latencies' spread and better beyond noise: l1 leaves the front
    xs, ys = [0.0675, 0.0681], [60.7, 61.7]
    assert plots.pareto_front(xs, ys, [0.5, 0.5], [0.002, 0.002]) == [1]
    assert plots.pareto_front(xs, ys, [0.5, 0.5]) == [0, 1]  # without it, a trade-off
    assert plots.pareto_front(xs, [61.7, 60.7], [0.5, 0.5], [0.0, 0.0]) == [0]


def test_one_seed_shows_no_spread_rather_than_none():
    """A cell of one seed: its CSV spread is empty (not 0), and the plot does not call the
    points it rings better beyond noise."""
    agg = report.aggregate(rows())
    table = export.csv_table(agg).set_index("cell_id")
    assert pd.isna(table.loc["cnn", "accuracy_std"])
    assert table.loc["mlp", "accuracy_std"] == pytest.approx(0.1)
    # a yes/no figure is a share of the seeds, with no spread (0.5 ± 0.71 meant nothing)
    flags = rows().assign(dense_reused=[True, False, True, True, None])
    shares = export.csv_table(report.aggregate(flags))
    assert "dense_reused" in shares.columns and "dense_reused_std" not in shares.columns

    def ringed(frame):
        legend = plots.tradeoff(frame, "latency_ms_p50").axes[0].get_legend()
        return [t.get_text() for t in legend.get_texts() if "Pareto" in t.get_text()]

    assert ringed(agg) == ["Pareto-optimal (per dataset; a point of 1 seed: noise not known)"]
    assert ringed(agg[agg["cell_id"] == "mlp"]) == ["Pareto-optimal beyond noise (per dataset)"]


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
    table = tables.distill_table(report.aggregate(pd.DataFrame(rows)))
    assert "kd(alpha=0.5, temperature=2.0)" in table and "90.0" in table and "61.0 ± 1.4" in table
    assert "+5.0 pt" in table and "No better than" not in table


def test_distill_table_gives_the_teachers_cost_and_names_a_teacher_at_chance():
    """The teacher's and the student's parameters and the teacher's training time; a teacher
    no better than always answering the most common class (a state_dict whose classes are in
    another order) is named under the table."""
    loaded = {"model": {"name": "cnn", "weights": {"path": "t.pth", "sha256": "ab" * 32}}}
    kd = {"name": "kd", "temperature": 4.0, "alpha": 0.9, "teacher": loaded}
    rows = [base_row("s", 0, {"distill": None}, accuracy=0.89, params=11_642)]
    rows += [base_row("k", 0, {"distill": kd}, accuracy=0.02, params=11_642,
                      teacher_accuracy=0.003, teacher_majority=0.11, teacher_params=11_181_642,
                      teacher_train_seconds=35.9)]
    table = tables.distill_table(report.aggregate(pd.DataFrame(rows)))
    assert "11,181,642 → 11,642" in table and "35.9" in table, table
    assert "No better than always answering the test split's most common class (11.0 %)" in table
    assert "teacher 0.3 %" in table and "`classes:`" in table
    # trained here, it trained too little; better than chance but worse than its student
    # trained from scratch, it can only pull the student down
    kd["teacher"] = {"model": {"name": "cnn"}}
    table = tables.distill_table(report.aggregate(pd.DataFrame(rows)))
    assert "trained too little" in table and "`classes:`" not in table
    rows[1]["teacher_accuracy"] = 0.5
    table = tables.distill_table(report.aggregate(pd.DataFrame(rows)))
    assert "A teacher worse than its student trained from scratch (89.0 %)" in table
    assert "most common class" not in table
    # two students whose teachers differ by their training alone are told apart
    longer = {**kd, "teacher": {"model": {"name": "cnn"}, "train": {"steps": 4000}}}
    rows.append(base_row("k2", 0, {"distill": longer}, accuracy=0.9, teacher_accuracy=0.95))
    table = tables.distill_table(report.aggregate(pd.DataFrame(rows)))
    assert "teacher cnn train steps=4000" in table and "teacher cnn train none" in table, table


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
    assert diagnostics.varying_params(list(agg["cell"])) == ["model.activation", "model.hidden",
                                                       "preprocess"]
    figs = dict((slug, fig) for _, slug, fig in plots.suite_figures(df, agg))
    assert {"heatmap", "learning_curve", "grad_norms", "confusion", "curves"} <= set(figs)
    for fig in figs.values():
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        assert buf.tell() > 5_000


def headline_rows():
    rows = []
    for cid, prune, acc, size, slim in (("dense", None, 0.90, 1000, None),
                                        ("masked", {"name": "l1_unstructured"}, 0.89, 1000, None),
                                        ("pruned", {"name": "l1_structured"}, 0.88, 1000, 400)):
        for s in (0, 1):
            extra = {"slimmed_params": 50, "slimmed_size_bytes": slim} if slim else {}
            rows.append(base_row(cid, s, {"prune": prune}, accuracy=acc + 0.001 * s,
                                 size_bytes=size, **extra))
    # three timing processes: the slimmed model at half the baseline's time, the masked one
    # at the baseline's, each process a little faster or slower as a whole
    doc = {"processes": 3, "rounds": 20, "threads": 1, "rows": []}
    for p, machine in enumerate((1.0, 1.2, 0.9)):
        for cid, kind, ms in (("dense", "model", 2.0), ("masked", "model", 2.0),
                              ("pruned", "model", 2.0), ("pruned", "slimmed", 1.0)):
            for s in (0, 1):
                jitter = 1 + 0.01 * ((p + s + len(cid)) % 3 - 1) if cid == "masked" else 1
                doc["rows"].append({"cell_id": cid, "seed": s, "kind": kind, "process": p,
                                    "ms_batch1": ms * machine * jitter, "p90_ms_batch1": 0,
                                    "ms_batch": 10 * ms * machine * jitter})
    return rows, doc


def test_headline_shows_what_would_ship_against_the_baseline_with_intervals():
    rows, doc = headline_rows()
    page = pages.suite_page(pd.DataFrame(rows), "s", baseline={"prune": "none"},
                             timing_doc=doc)
    assert "Baseline (the suite's `baseline:`)" in page
    head = page.split("## Every figure")[0]
    pruned = next(x for x in head.splitlines() if x.startswith("| l1_structured "))
    # paired by seed: every seed lost exactly 2 points, so it is no noise; shipped = slimmed
    assert "-2.0 pt" in pruned and "≈ -2.0" not in pruned and "50 (slimmed)" in pruned
    assert "2.00 [2.00, 2.00]" in pruned and "| 0.40 " in pruned  # speed-up, size ×
    # and at batch 1, where a model is served one request at a time
    assert "batch-1 speed-up × [95 % CI]" in head and pruned.count("2.00 [2.00, 2.00]") == 2
    masked = next(x for x in head.splitlines() if x.startswith("| l1_unstructured "))
    assert "≈ 1.0" in masked  # dense shapes: the interval includes 1
    assert len(head.splitlines()[-1].split("|")) - 2 <= 1 + 8  # the axis + at most 8 columns


@pytest.mark.parametrize("seeds, step, words", [
    ((0,), 0.001, "-2.0 pt (1 seed)"),  # nothing to test with one seed
    ((0, 1, 2), 0.0, "-2.0 pt (seeds alike)"),  # copies of one evaluation, not replicates
    ((0, 1, 2), 0.001, "| -2.0 pt (3 seeds: paired t p < 0.001) "),  # each lost 2 points
])
def test_a_delta_with_nothing_to_test_says_why_instead_of_within_noise(seeds, step, words):
    rows = [base_row(cid, s, {"prune": prune}, accuracy=acc + step * s)
            for cid, prune, acc in (("dense", None, 0.90), ("pruned", {"name": "l1_structured"}, 0.88))
            for s in seeds]
    page = pages.suite_page(pd.DataFrame(rows), "s", baseline={"prune": "none"})
    pruned = next(x for x in page.splitlines() if x.startswith("| l1_structured "))
    assert words in pruned and "≈" not in pruned, pruned


def ACCURACY(right):  # noqa: N802 (what a classifier's record keeps: rights, and the figure)
    return outcomes.PerSample(right, "accuracy", ("accuracy",))


@pytest.mark.parametrize("n, lost, gained, words", [
    (100, 2, 0, "| ≈ -2.0 pt (McNemar p 0.5) "),  # two samples: the split's luck
    (1000, 40, 20, "| -2.0 pt (McNemar p 0.013) "),  # 60 samples apart, 2 : 1 against
    (1000, 30, 30, "| ≈ +0.0 pt (McNemar p 1) "),  # as many lost as gained
])
def test_a_delta_of_a_loaded_model_is_tested_on_the_test_samples(n, lost, gained, words):
    """One evaluation per model (seeds alike): the samples each model got right are paired,
    and McNemar's test says whether those only one of them got right differ by more than
    chance. The figure is the records' accuracy; the outcomes only test it."""
    right = np.zeros(n, dtype=bool)
    right[:n // 2] = True
    other = right.copy()
    other[:lost] = False  # right in the baseline, wrong in the other
    other[n // 2:n // 2 + gained] = True  # and the other way round
    rows = [base_row(cid, s, {"prune": prune}, accuracy=float(r.mean()))
            for cid, prune, r in (("dense", None, right),
                                  ("pruned", {"name": "l1_structured"}, other))
            for s in (0, 1, 2)]
    for row, r in zip(rows, [right] * 3 + [other] * 3):
        row["extra"] = outcomes.kept(ACCURACY(r), np.zeros(n))
    page = pages.suite_page(pd.DataFrame(rows), "s", baseline={"prune": "none"})
    pruned = next(x for x in page.splitlines() if x.startswith("| l1_structured "))
    assert words in pruned, pruned
    # outcomes of another figure, or of another split, test nothing
    for row in rows[3:]:
        row["extra"] = outcomes.kept(ACCURACY(np.ones(n + 1, dtype=bool)), np.zeros(n + 1))
    page = pages.suite_page(pd.DataFrame(rows), "s", baseline={"prune": "none"})
    assert "(seeds alike)" in next(x for x in page.splitlines() if x.startswith("| l1_str"))


def test_without_a_baseline_the_only_uncompressed_cell_is_picked_and_named():
    rows, doc = headline_rows()
    page = pages.suite_page(pd.DataFrame(rows), "s", timing_doc=doc)
    assert "names no `baseline:`, so the uncompressed cell" in page
    assert "2.00 [2.00, 2.00]" in page


def test_scaling_table():
    rows = []
    for cid, backend, rate in (("one", {"name": "cpu", "threads": 1}, 1000.0),
                               ("two", {"name": "cpu", "threads": 2}, 1500.0),
                               ("ddp", {"name": "ddp", "world_size": 2, "threads": 1}, 1800.0)):
        rows.append(base_row(cid, 0, {"backend": backend}, accuracy=0.5, train_samples_s=rate))
    t = tables.scaling_table(report.aggregate(pd.DataFrame(rows)), pd.DataFrame(rows))
    assert "| cpu(threads=2)" in t and "1.50 (1 seed)" in t and "0.75 (1 seed)" in t
    assert "0.90 (1 seed)" in t
    assert "| ddp(threads=1, world_size=2)" in t  # as the other tables name it
    assert "peak RSS is its coordinating process's" in t
    # two models: each backend against the one-core cell of its own model (the mlp's speed-up
    # was taken against the linear model's one core, and their rows could not be told apart)
    rows += [base_row(f"m{cid}", 0, {"backend": b, "model": {"name": "cnn"}}, accuracy=0.5,
                      train_samples_s=rate)
             for cid, b, rate in (("one", {"name": "cpu", "threads": 1}, 500.0),
                                  ("two", {"name": "cpu", "threads": 2}, 900.0))]
    t = tables.scaling_table(report.aggregate(pd.DataFrame(rows)), pd.DataFrame(rows))
    cnn = [line for line in t.splitlines() if line.startswith("| cnn ")]
    assert len(cnn) == 2 and "1.80 (1 seed)" in cnn[1] and "0.90 (1 seed)" in cnn[1], t


def test_scaling_is_paired_by_seed_with_its_interval():
    """The speed-up was a ratio of means, with no n and no interval: 0.70 read as a finding
    where the headline beside it said ≈ 0.69 [0.15, 3.11]."""
    rows = [base_row(cid, seed, {"backend": backend}, accuracy=0.5, train_samples_s=rate)
            for cid, backend, rates in (("one", {"name": "cpu", "threads": 1}, (1000, 800, 1200)),
                                        ("two", {"name": "cpu", "threads": 2}, (1500, 1200, 1800)),
                                        ("wob", {"name": "cpu", "threads": 4}, (500, 1600, 1200)))
            for seed, rate in enumerate(rates)]
    t = tables.scaling_table(report.aggregate(pd.DataFrame(rows)), pd.DataFrame(rows))
    two = next(line for line in t.splitlines() if line.startswith("| cpu(threads=2)"))
    assert "| 3 " in two and "1.50 [1.50, 1.50]" in two and "0.75 [0.75, 0.75]" in two, t
    wobbly = next(line for line in t.splitlines() if line.startswith("| cpu(threads=4)"))
    assert "≈ " in wobbly, t
    assert "coordinating process" not in t  # no ddp row


def test_each_row_is_compared_with_the_baseline_of_its_own_group():
    """`baseline: {prune: none}` with two models: the pruned cnn against the dense cnn."""
    rows = []
    for model, acc in (("mlp", 0.60), ("cnn", 0.90)):
        for prune, delta in ((None, 0.0), ({"name": "l1_structured"}, -0.02)):
            for s in (0, 1):
                rows.append(base_row(f"{model}-{bool(prune)}", s,
                                     {"model": {"name": model}, "prune": prune},
                                     accuracy=acc + delta + 0.001 * s, size_bytes=1000))
    page = pages.suite_page(pd.DataFrame(rows), "s", baseline={"prune": "none"})
    head = page.split("## Every figure")[0]
    for model in ("mlp", "cnn"):
        line = next(x for x in head.splitlines() if x.startswith(f"| {model} ")
                    and "l1_structured" in x)
        assert "-2.0 pt" in line  # not cnn vs mlp's 30 points
    assert "with the same other axes" in head


def test_a_row_without_a_baseline_is_named_with_the_key_that_would_give_it_one():
    """`baseline: {quantize: none}` and an int8 row on ONNX Runtime, no float row there: its
    relative columns are empty, and the page says why and what to name."""
    rows = [base_row(cid, s, cell, accuracy=0.9 + 0.01 * s, size_bytes=1000)
            for cid, cell in (("dense", {}), ("dyn", {"quantize": {"name": "int8_dynamic"}}),
                              ("ort", {"quantize": {"name": "int8_static"},
                                       "deploy": {"name": "onnxruntime"}}))
            for s in (0, 1)]
    head = pages.suite_page(pd.DataFrame(rows), "s", baseline={"quantize": "none"}
                            ).split("## Every figure")[0]
    assert "No baseline for int8_static · onnxruntime (relative columns empty)" in head
    assert "none is on `deploy`. Name `deploy` in `baseline:`" in head
    full = pages.suite_page(pd.DataFrame(rows), "s",
                            baseline={"quantize": "none", "deploy": "eager"})
    assert "No baseline for" not in full
    # two cells the baseline matches alike (`model: cnn`, two widths): said so
    rows = [base_row(cid, s, {"model": {"name": "cnn", "channels": c}}, accuracy=0.9)
            for cid, c in (("narrow", 8), ("wide", 16)) for s in (0, 1)]
    rows += [base_row("q", s, {"model": {"name": "cnn", "channels": 8},
                               "quantize": {"name": "int8_dynamic"}}, accuracy=0.9)
             for s in (0, 1)]
    head = pages.suite_page(pd.DataFrame(rows), "s", baseline={"model": "cnn"})
    assert "several cells match it alike" in head and "none is on" not in head
    # and where it picks no row at all (`model: cnn` over two widths, nothing else)
    alike = pages.suite_page(pd.DataFrame(rows[:4]), "s", baseline={"model": "cnn"})
    assert "several cells match it alike" in alike and "matches no cell" not in alike
    # a wide matrix: five rows named, the rest counted
    rows = [base_row(f"w{c}", s, {"model": {"name": "cnn", "channels": c}}, accuracy=0.9)
            for c in range(4, 12) for s in (0, 1)]
    many = pages.suite_page(pd.DataFrame(rows), "s", baseline={"model": "cnn"})
    assert "; and 3 more rows (relative columns empty)" in many


def test_a_dotted_baseline_key_pairs_rows_as_it_matched_cells_at_load():
    """`baseline: {train.steps: 5}` loaded (matched by the dotted setting) but the report
    looked for a key `train.steps` in the cell and paired nothing."""
    rows = [base_row(f"{p}{steps}", s, {"prune": {"name": p} if p else None,
                                         "train": {"steps": steps, "batch_size": 32}},
                     accuracy=0.9 - 0.01 * steps / 5 - (0.05 if p else 0))
            for p in (None, "l1_structured") for steps in (5, 10) for s in (0, 1)]
    bases, _ = report.baselines(report.aggregate(pd.DataFrame(rows)), {"train.steps": 5})
    assert {cid: b["cell_id"] for cid, b in bases.items()} == {
        "None5": "None5", "None10": "None5",
        "l1_structured5": "l1_structured5", "l1_structured10": "l1_structured5"}


def test_deploy_table_ranks_each_format_side_by_side():
    """Compiling may reorder techniques: each format's cells are ranked among themselves."""
    slim = {"name": "l1_structured", "amount": 0.5}
    rows = []
    for cid, deploy, prune, ms, compile_s in (("de", "eager", None, 2.0, None),
                                              ("pe", "eager", slim, 1.0, None),
                                              ("dc", "compile", None, 0.5, 9.0),
                                              ("pc", "compile", slim, 0.8, 7.0)):
        for s in (0, 1):
            figures = ({"slimmed_params": 10, "slimmed_latency_ms_batch_p50": ms,
                        "slimmed_compile_seconds": compile_s} if prune else
                       {"latency_ms_batch_p50": ms, "compile_seconds": compile_s})
            # eager is what a cell without the key gets: it has none
            rows.append(base_row(cid, s, {"deploy": None if deploy == "eager" else
                                          {"name": deploy}, "prune": prune},
                                 accuracy=0.9, **figures))
    t = tables.deploy_table(report.aggregate(pd.DataFrame(rows)))
    lines = t.splitlines()
    assert "eager rank" in lines[0] and "compile rank" in lines[0]
    assert "seconds to compile" in lines[0] and "seconds to eager" not in lines[0]
    cols = {x.split("|")[1].strip(): [c.strip() for c in x.strip("|").split("|")[1:]]
            for x in lines[2:]}
    # eager: the slimmed model wins; compiled: the dense one does
    assert cols["none"] == ["2", "2", "90.0", "0.5", "1", "90.0", "9.0"]
    rows[0]["latency_ms_batch_p50"] = rows[1]["latency_ms_batch_p50"] = 1.02  # within 3 %
    tie = tables.deploy_table(report.aggregate(pd.DataFrame(rows)))
    assert "| 1 ≈ " in tie and "| 2 ≈ " in tie
    assert cols["l1_structured"] == ["1", "1", "90.0", "0.8", "2", "90.0", "7.0"]


def test_the_headline_says_when_rows_trained_for_different_budgets():
    """Fine-tuning adds steps the baseline never got: the headline shows each row's steps
    and says a Δ may be the budget's; rows of one budget show neither."""
    rows, doc = headline_rows()
    even = pages.suite_page(pd.DataFrame([{**r, "steps_total": 100} for r in rows]), "s",
                            baseline={"prune": "none"}, timing_doc=doc)
    assert "steps trained" not in even.split("## Every figure")[0]
    uneven = pages.suite_page(pd.DataFrame([
        {**r, "steps_total": 100 + (40 if r["cell"]["prune"] else 0)} for r in rows]), "s",
        baseline={"prune": "none"}, timing_doc=doc)
    head = uneven.split("## Every figure")[0]
    assert "steps trained" in head and "may be the budget's" in head
    pruned = next(x for x in head.splitlines() if x.startswith("| l1_structured "))
    assert "| 140 " in pruned


def test_fine_tuning_continues_the_training_curve():
    """A pruned cell's fine-tune rounds are drawn after its training, steps and seconds
    continuing; a post-training cell's curve is its fine-tuning."""
    from modelopt.results.plots import chained

    curves = [{"phase": "train", "step": 10, "seconds": 1.0, "val_score": 0.5},
              {"phase": "train", "step": 20, "seconds": 2.0, "val_score": 0.6},
              {"phase": "finetune1", "step": 5, "seconds": 0.5, "val_score": 0.4},
              {"phase": "finetune2", "step": 5, "seconds": 0.4, "val_score": 0.55}]
    assert [c["step"] for c in chained(curves, "step")] == [10, 20, 25, 30]
    assert [c["seconds"] for c in chained(curves, "seconds")] == [1.0, 2.0, 2.5, 2.9]
    only = chained([{"phase": "finetune", "step": s, "seconds": s / 10, "val_score": 0.1}
                    for s in (20, 40, 60)], "step")
    assert [c["step"] for c in only] == [20, 40, 60]


def test_the_headline_gives_a_backends_training_speed_up_paired_by_seed():
    """AMP's payoff is its training throughput: a column where a row trains on another
    backend than its baseline, paired by seed with its interval; none where none does."""
    rows = []
    amp = {"name": "cuda", "amp": True, "amp_dtype": "bf16"}
    for cid, backend, rates in (("fp32", {"name": "cuda", "amp": False}, (1000.0, 1100.0, 900.0)),
                                ("amp", amp, (2000.0, 2200.0, 1800.0)),
                                ("amp-noisy", {**amp, "device": 1}, (500.0, 2200.0, 1900.0))):
        for s, rate in enumerate(rates):
            rows.append(base_row(cid, s, {"backend": backend}, accuracy=0.9,
                                 train_samples_s=rate))
    df = pd.DataFrame(rows)
    head = pages.suite_page(df, "s", baseline={"backend": {"name": "cuda", "amp": False}})
    head = head.split("## Every figure")[0]
    assert "training × [95 % CI]" in head and "paired by seed" in head
    lines = [x for x in head.splitlines() if x.startswith("| cuda(amp=True")]
    assert "| 2.00 [2.00, 2.00] " in lines[0]  # every seed trained twice as fast
    assert "device=1" in lines[1] and "| ≈ 1.28 [0.17, 9.75] " in lines[1]  # seeds disagree
    same = pages.suite_page(df[df["cell_id"] == "fp32"], "s",
                            baseline={"backend": {"name": "cuda", "amp": False}})
    assert "training ×" not in same


def test_the_zipped_size_is_shown_wherever_a_cell_compresses():
    """Pruned zeros and weights rounded to few values (a fake-quant plugin keeps them as
    floats: the same file size) shrink once zipped: the table shows it for both."""
    def shown(*cells):
        return "size_bytes_compressed" in report.cost_metrics(pd.DataFrame({"cell": cells}))

    dense = {"model": {"name": "mlp"}, "prune": None, "quantize": None}
    assert not shown(dense)
    assert shown(dense, {**dense, "quantize": {"name": "fake_quant", "bits": 4}})
    assert shown(dense, {**dense, "prune": {"name": "l1_unstructured", "amount": 0.5}})


def test_a_target_not_reached_is_never_the_fastest_and_lost_seeds_are_counted():
    """gd never reached the target: its steps to target are its whole (short) budget, said
    as not reached and never bold; a row whose seed diverged says so in its n."""
    rows = []
    for cid, steps, reached in (("adam", 400, True), ("gd", 25, False), ("sgd", 600, True)):
        for s in (0, 1):
            rows.append(base_row(cid, s, {"optimizer": {"name": cid}}, accuracy=0.9,
                                 steps_to_target=steps, target_reached=reached))
    rows.append({**base_row("sgd", 2, {"optimizer": {"name": "sgd"}}), "status": "diverged"})
    agg = report.aggregate(pd.DataFrame(rows))
    text = report.table(agg, ["accuracy", "steps_to_target", "target_reached"])
    gd = next(line for line in text.splitlines() if line.startswith("| gd "))
    assert "not reached" in gd and "**" not in gd.split("|")[3]
    assert "**400**" in text  # the fastest that reached it
    sgd = next(line for line in text.splitlines() if line.startswith("| sgd "))
    assert sgd.rstrip(" |").endswith("2 of 3 (1 diverged)")
    # the seeds that reached it are counted, not averaged with a spread
    assert gd.split("|")[4].strip() == "0 of 2" and sgd.split("|")[4].strip() == "2 of 2"


def test_the_best_figure_is_the_shipped_models_never_a_masked_one_beside_it():
    """Structured pruning ships its slimmed model: its masked model's latency (same shape as
    the dense one) is shown but never bolded as the fastest; the slimmed one's is."""
    slim = "slimmed_latency_ms_p50"
    rows = [base_row("dense", s, {}, accuracy=0.9, latency_ms_p50=2.0) for s in (0, 1)]
    rows += [base_row("int8", s, {"quantize": {"name": "int8_dynamic"}}, accuracy=0.9,
                      latency_ms_p50=1.5) for s in (0, 1)]
    rows += [base_row("pruned", s, {"prune": {"name": "l1_structured", "amount": 0.5}},
                      accuracy=0.9, latency_ms_p50=1.3, slimmed_params=10.0, **{slim: 1.24})
             for s in (0, 1)]
    text = report.table(report.aggregate(pd.DataFrame(rows)), ["latency_ms_p50", slim])
    pruned = next(line for line in text.splitlines() if "l1_structured" in line)
    assert "**1.24**" in pruned and "**1.3**" not in pruned
    assert text.count("**") == 2
    # without a slimmed model, the fastest shipped figure is bolded as before
    rows = [r for r in rows if r["cell_id"] != "pruned"]
    assert "**1.5**" in report.table(report.aggregate(pd.DataFrame(rows)), ["latency_ms_p50"])


def test_a_heatmaps_axes_are_what_varies_in_order_and_named_as_the_tables_name_them():
    """adam's eps beside sgd follows the name (no axis of its own); subsample fractions run
    by size, written as the tables write them; each square gives its spread."""
    two = [{"optimizer": {"name": "sgd", "lr": 0.01}},
           {"optimizer": {"name": "adam", "lr": 0.01, "eps": 1e-8}}]
    assert diagnostics.varying_params(two) == ["optimizer.name"]
    rows = [base_row(f"{frac}{aug}", s, {"preprocess": [{"name": "subsample", "fraction": frac}],
                                         "augment": [{"name": aug}] if aug else None},
                     accuracy=0.5 + frac * 0.4 + 0.01 * s)
            for frac in (1.0, 0.5, 0.05) for aug in (None, "shift") for s in (0, 1)]
    fig = diagnostics.heatmap(report.aggregate(pd.DataFrame(rows)))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        f"subsample(fraction={f})" for f in (0.05, 0.5, 1.0)]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["none", "shift"]
    assert any("±" in t.get_text() for t in ax.texts)


def test_a_parameter_techniques_share_is_named_where_it_differs():
    """`sgd` at lr 0.1 beside `adam` at 0.01: each label gives its lr (a bare name reads as
    its default); eps, which only adam-like optimizers take and share, is left out."""
    from modelopt.results.labels import axis_labels

    cells = [{"optimizer": {"name": "sgd", "lr": 0.1, "weight_decay": 0.0}},
             {"optimizer": {"name": "adam", "lr": 0.01, "eps": 1e-8, "weight_decay": 0.0}},
             {"optimizer": {"name": "adamw", "lr": 0.01, "eps": 1e-8, "weight_decay": 0.1}}]
    assert list(axis_labels(cells)["axis:optimizer"]) == [
        "sgd(lr=0.1, weight_decay=0.0)", "adam(lr=0.01, weight_decay=0.0)",
        "adamw(lr=0.01, weight_decay=0.1)"]


def test_a_fine_tuned_row_is_compared_with_the_dense_row_trained_as_long():
    """match_budget's row (dense, 400 steps) is the pruned row's baseline (300 + 100 of
    fine-tuning), not the 300-step dense row: the Δ is pruning's, not the budget's."""
    prune = {"name": "l1_structured", "amount": 0.5, "finetune_steps": 100}
    rows = []
    for cid, steps, pr, total, acc in (("d300", 300, None, 300, 0.70), ("d400", 400, None, 400, 0.75),
                                       ("p", 300, prune, 400, 0.65)):
        rows += [base_row(cid, s, {"train": {"steps": steps}, "prune": pr}, accuracy=acc + 0.01 * s,
                          steps_total=total) for s in (0, 1)]
    agg = report.aggregate(pd.DataFrame(rows))
    bases, _ = report.baselines(agg, None)
    assert bases["p"]["cell_id"] == "d400" and bases["d300"]["cell_id"] == "d300"
    head = pages.suite_page(pd.DataFrame(rows), "s").split("## Every figure")[0]
    assert "-10.0 pt" in head and "with a baseline is compared with one trained as many" in head


def test_a_spread_is_given_to_two_significant_digits_and_large_figures_in_full():
    """0.401 ± 0.00137 gave the spread more digits than the figure; an MSE of 3,120 read
    3.12e+03."""
    assert report.fmt(0.401, 0.00137, "g3") == "0.401 ± 0.0014"
    assert report.fmt(2.0, 0.00759, "g3") == "2 ± 0.0076"
    assert report.fmt(3120.4, 150.3, "g3") == "3,120 ± 150"
    assert report.fmt(18.04, 0.9541, "f2") == "18.04 ± 0.95"
    # a spread the metric's own digits would show as 0, or in e-notation, or without commas
    assert report.fmt(0.3, 0.043, "f1") == "0.3 ± 0.043"
    assert report.fmt(0.015, 7.8e-05, "g3") == "0.015 ± 0.000078"
    assert report.fmt(139218.0, 41656.0, "f0") == "139,218 ± 41,656"
    assert report.fmt(0.929, 0.0003, "pct") == "92.9 ± 0.030"
    # a figure its own digits would show as 0 (a training of 0.04 s read "0.0 ± 0.0022")
    assert report.fmt(0.04, 0.0022, "f1") == "0.04 ± 0.0022"
    assert report.fmt(0.0, None, "f1") == "0.0"


def test_the_page_says_how_many_test_samples_a_point_is():
    rows = [base_row(cid, s, {"prune": prune}, accuracy=0.9, test_samples=n)
            for cid, prune, n in (("dense", None, 80), ("pruned", {"name": "l1_structured"}, 80))
            for s in (0, 1)]
    assert "mnist1d (test split: 80 samples)" in pages.suite_page(pd.DataFrame(rows), "s")
    # and what a sample, and the split's own sampling noise, are in accuracy (one seed of a
    # loaded model shows no spread: +11 pt on 18 samples was two images)
    assert ("where one sample is 1.2 pt of accuracy and an accuracy near 90 % has a 95 % "
            "binomial interval of ±6.6 pt") in pages.suite_page(pd.DataFrame(rows), "s")
    rows[0]["test_samples"] = 120  # two datasets, or folds: the range
    assert "(test split: 80 to 120 samples)" in pages.suite_page(pd.DataFrame(rows), "s")


def test_the_reference_paths_speed_up_is_never_shown_as_a_speed():
    """int8 PT2E run eagerly is quantize / dequantize around float kernels: the headline said
    so, while the table of every figure printed its 0.27× and could bold it."""
    rows = [base_row(cid, s, {"quantize": q}, accuracy=0.9, speedup_batch=v,
                     int8_path=path)
            for cid, q, v, path in (("int8", {"name": "int8_static"}, 0.27, "reference"),
                                    ("ort", {"name": "int8_static", "x": 1}, 2.5, "int8 kernels"))
            for s in (0, 1)]
    text = report.table(report.aggregate(pd.DataFrame(rows)), ["speedup_batch"])
    assert "reference path" in text and "0.27" not in text


def test_two_rows_of_the_same_figure_are_both_the_best():
    """0.957 on two rows of identical seeds, their means summed in another order: both bold
    (one was, the other not)."""
    rows = [base_row(cid, s, {"quantize": q}, accuracy=a)
            for cid, q, vals in (("dense", None, (0.1 + 0.2, 0.3, 0.6)),
                                 ("int8", {"name": "int8_weight_only"}, (0.6, 0.3, 0.1 + 0.2)),
                                 ("low", {"name": "bf16"}, (0.1, 0.1, 0.1)))
            for s, a in enumerate(vals)]
    text = report.table(report.aggregate(pd.DataFrame(rows)), ["accuracy"])
    assert text.count("**") == 4, text


def test_a_row_that_did_not_train_is_not_the_fastest_to_train():
    rows = [base_row(cid, s, {"prune": p}, accuracy=0.9, train_seconds=t, steps_total=n)
            for cid, p, t, n in (("loaded", None, 0.0, 0),
                                 ("tuned", {"name": "l1_structured"}, 4.0, 100),
                                 ("longer", {"name": "l1_unstructured"}, 9.0, 300))
            for s in (0, 1)]
    text = report.table(report.aggregate(pd.DataFrame(rows)), ["train_seconds"])
    assert "**4.0**" in text and "**0.0**" not in text


def test_a_fine_tuning_optimizer_is_labelled_with_its_own_parameters():
    """`finetune_optimizer=adam` beside the training's `adam(lr=0.001)` read as the same
    optimizer; the fine-tune's lr was 0.0005."""
    from modelopt.results.labels import axis_labels

    train = {"steps": 0, "finetune_optimizer": {"name": "adam", "lr": 0.0005}}
    cells = [{"model": {"name": "mlp"}, "optimizer": {"name": "adam", "lr": 0.001},
              "train": train},
             {"model": {"name": "mlp"}, "optimizer": {"name": "adam", "lr": 0.001},
              "train": {**train, "finetune_optimizer": None}}]
    assert "finetune_optimizer=adam(lr=0.0005)" in axis_labels(cells)["axis:train"].iloc[0]


def test_figures_that_read_alike_are_bolded_alike():
    """1.00 in bold beside a plain 1.00 told the two apart by a difference the page hides."""
    rows = [base_row(cid, s, {"prune": p}, accuracy=0.9, train_seconds=t, steps_total=100)
            for cid, p, t in (("a", None, 0.2951), ("b", {"name": "l1_structured"}, 0.3049),
                              ("c", {"name": "l1_unstructured"}, 0.9))
            for s in (0, 1)]
    text = report.table(report.aggregate(pd.DataFrame(rows)), ["train_seconds"])
    assert text.count("**0.3**") == 2 and "**0.9**" not in text


def test_a_figure_within_the_seeds_spread_of_the_best_is_bolded_with_it():
    """A latency 0.5 % above the best, with seeds 3 % apart, was left plain beside a bold
    best: a winner by a difference the seeds' noise makes. A clear gap stays plain."""
    rows = [base_row(cid, s, {"prune": p}, accuracy=0.9, latency_ms_p50=lat * (1 + d))
            for cid, p, lat in (("a", None, 2.00), ("b", {"name": "l1_structured"}, 2.01),
                                ("c", {"name": "l1_unstructured"}, 2.5))
            for s, d in enumerate((-0.03, 0.03))]
    text = report.table(report.aggregate(pd.DataFrame(rows)), ["latency_ms_p50"])
    assert text.count("**") == 4 and "**2.5" not in text, text
    one_seed = [r for r in rows if r["seed"] == 0]  # no spread: the best alone
    assert report.table(report.aggregate(pd.DataFrame(one_seed)), ["latency_ms_p50"]).count("**") == 2
    assert "within the best's own standard deviation over seeds" in pages.suite_page(
        pd.DataFrame(rows), "s")
    noisy = [base_row(cid, s, {"prune": p}, accuracy=0.9, r2=r2)
             for cid, p, spread in (("a", None, [0.989, 0.991]),
                                    ("b", {"name": "l1_structured"}, [-7.9, 1.9]))
             for s, r2 in enumerate(spread)]  # -3.0 ± 6.9 beside 0.990 ± 0.001
    text = report.table(report.aggregate(pd.DataFrame(noisy)), ["r2"])
    assert text.count("**") == 2 and "**0.99" in text, text


def test_labels_say_what_a_cell_that_names_no_loss_or_pruning_uses():
    """`loss=none` beside `focal` read as training without a loss (it trains with its task's
    own); the int8 note said `none · int8_dynamic` of a row that prunes nothing."""
    from modelopt.results.labels import axis_labels
    from modelopt.results.runtimes import int8_notes

    cells = [{"model": {"name": "mlp"}, "loss": None},
             {"model": {"name": "mlp"}, "loss": {"name": "focal", "gamma": 2.0}}]
    assert list(axis_labels(cells)["axis:loss"]) == ["task default", "focal"]
    rows = [base_row(cid, s, {"prune": p, "quantize": q}, accuracy=0.9, int8_path=path)
            for cid, p, q, path in (("dense", None, None, None),
                                    ("int8", None, {"name": "int8_dynamic"}, "int8 kernels"),
                                    ("pruned", {"name": "l1_structured"}, None, None))
            for s in (0, 1)]
    note = int8_notes(report.aggregate(pd.DataFrame(rows)))
    assert note == "int8 rows ran on: int8_dynamic: int8 kernels.", note
    # two datasets: each int8 row named with its own (three alike lines told nothing)
    rows = [{**r, "cell_id": f"{r['cell_id']}-{ds}",
             "cell": {**r["cell"], "dataset": {"name": ds}}}
            for r in rows for ds in ("digits", "mnist1d")]
    note = int8_notes(report.aggregate(pd.DataFrame(rows)))
    assert note == ("int8 rows ran on: digits · int8_dynamic: int8 kernels; mnist1d · "
                    "int8_dynamic: int8 kernels."), note


def test_a_ddp_row_says_how_many_processes_it_trained_on():
    """A lone `ddp` beside `cpu` hid its world size: its samples/s are of two processes."""
    from modelopt.results.labels import axis_labels

    cells = [{"model": {"name": "mlp"}, "backend": {"name": "cpu", "threads": 1}},
             {"model": {"name": "mlp"}, "backend": {"name": "ddp", "world_size": 2,
                                                    "threads": 1}}]
    assert list(axis_labels(cells)["axis:backend"]) == ["cpu", "ddp(world_size=2)"]


def test_a_techniques_parameters_read_alike_whichever_order_a_cell_wrote_them():
    from modelopt.results.labels import axis_labels

    cells = [{"model": {"name": "cnn", "width": 1.0, "separable": False}},
             {"model": {"name": "cnn", "separable": True, "width": 0.5}}]
    assert list(axis_labels(cells)["axis:model"]) == ["cnn(separable=False, width=1.0)",
                                                      "cnn(separable=True, width=0.5)"]


def test_rows_of_one_figure_are_ordered_baseline_first_then_by_label():
    """Ties kept the results file's order: the baseline sat mid-table and two runs of the
    same figures printed two pages."""
    cells = (("a-dense", None), ("b-pruned", {"name": "l1_structured"}),
             ("c-random", {"name": "random_structured"}))
    rows = [base_row(cid, s, {"prune": prune}, accuracy=0.9) for cid, prune in cells
            for s in (0, 1)]
    base = {"prune": "none"}
    forward = pages.suite_page(pd.DataFrame(rows), "s", baseline=base)
    backward = pages.suite_page(pd.DataFrame(rows[::-1]), "s", baseline=base)
    assert forward == backward
    table = forward[forward.index("| prune"):]
    assert table.index("| none") < table.index("| l1_structured") < table.index(
        "| random_structured")


def test_a_figure_without_a_direction_orders_rows_by_label_not_by_value():
    """A descriptive figure has no best: ranked by value, its rows read as best first."""
    from modelopt.results.order import ranked

    cells = (("a", None, 3.0), ("b", {"name": "l1_structured"}, 1.0),
             ("c", {"name": "random_structured"}, 2.0))
    rows = [base_row(cid, 0, {"prune": prune}, vocab_size=v) for cid, prune, v in cells]
    agg = report.aggregate(pd.DataFrame(rows))
    # by label (l1_structured, none, random_structured), not 1, 2, 3 nor 3, 2, 1
    assert list(ranked(agg, "vocab_size")["cell_id"]) == ["b", "a", "c"]
    assert list(ranked(agg, "vocab_size", {"c"})["cell_id"]) == ["c", "b", "a"]


def test_the_latency_plot_says_it_left_the_reference_path_off():
    """The int8 reference path's latency is not int8's: the accuracy-latency plot dropped
    its row without a word."""
    rows = [base_row(cid, s, {"quantize": q}, accuracy=0.9, latency_ms_batch_p50=ms,
                     int8_path=path)
            for cid, q, ms, path in (("dense", None, 1.0, None),
                                     ("int8", {"name": "int8_static"}, 4.0, "reference"))
            for s in (0, 1)]
    fig = plots.accuracy_vs_latency(report.aggregate(pd.DataFrame(rows)))
    assert "1 int8 reference-path row(s) left off" in fig.axes[0].get_xlabel()


def test_an_axis_of_teachers_is_labelled_not_a_key_error():
    """Two kd cells differing only by their teacher: the heatmap's axis is `distill.teacher`,
    a mapping without a name, and labelling it raised KeyError: 'name' (no report)."""
    from modelopt.results import diagnostics

    teacher = {"model": {"name": "cnn2d", "channels": 16}, "train": {"steps": 10}}
    assert diagnostics._tick(json.dumps(teacher)) == "cnn2d(channels=16)"
    assert labels.spec_label({"steps": 10, "batch_size": 8}, set()) == "batch_size=8, steps=10"


def test_a_language_model_worse_than_counts_is_said_and_its_tokens_counted():
    from modelopt.results import store
    from modelopt.run.runner import declarations
    from modelopt.spec.suite import parse

    lm = parse("name: lm\ndefaults: {dataset: {name: corpus, max_chars: 20000, block_size: 32},"
               " model: {name: gpt, dim: 16, depth: 1, heads: 2}}\n")
    task_docs, figures = declarations(lm)  # what its suite.json declares
    store.declare_figures(figures, task_docs, "lm suite.json")
    rows = [base_row(cid, s, {"model": {"name": "gpt", "dim": dim}}, task="language_modelling",
                     perplexity=ppl + 0.01 * s, baseline_kneser_ney_perplexity=1.552,
                     test_samples=13, seq_len=64)
            for cid, dim, ppl in (("small", 16, 3.9), ("big", 64, 1.4)) for s in (0, 1)]
    page = pages.suite_page(pd.DataFrame(rows), "s")
    assert "**1 of 2 cell(s) predict worse than counts**" in page
    assert "Kneser-Ney trigram's on the same test tokens (1.552)" in page
    assert "test split: 13 windows of 64 tokens, 832 tokens predicted" in page
    better = [r for r in rows if r["cell_id"] == "big"]
    assert "predict worse than counts" not in pages.suite_page(pd.DataFrame(better), "s")


def test_the_share_of_texts_cut_at_max_length_is_said():
    rows = [base_row("c", s, {}, accuracy=0.8, truncated_share=0.1, seq_len=64) for s in (0, 1)]
    assert "10 % of the texts cut at max_length 64" in pages.suite_page(pd.DataFrame(rows), "s")
    rows = [{**r, "truncated_share": 0.0} for r in rows]
    assert "cut at max_length" not in pages.suite_page(pd.DataFrame(rows), "s")
    # two lengths: the share named with its own length
    rows = [base_row(f"c{n}", 0, {"dataset": {"name": "csv", "max_length": n}}, accuracy=0.8,
                     truncated_share=share, seq_len=n) for n, share in ((64, 0.3), (256, 0.02))]
    assert "30 % of the texts cut at max_length 64" in pages.suite_page(pd.DataFrame(rows), "s")



def test_two_seeds_that_cannot_test_a_large_gain_say_so_rather_than_within_noise():
    """96 % against 66 % on both seeds (Δ 0.275 and 0.325) is p 0.053 at one degree of
    freedom: it read "≈ +30.0 pt", within noise."""
    from modelopt.results import headline

    rows = [base_row(cid, s, {}, accuracy=acc)
            for cid, accs in (("base", (0.66, 0.65)), ("std", (0.935, 0.975)))
            for s, acc in enumerate(accs)]
    df = pd.DataFrame(rows)
    base, r = (pd.Series({"cell_id": c}) for c in ("base", "std"))
    said = headline._delta(df, r, base, "accuracy")
    assert said == "+30.0 pt (2 seeds: paired t p 0.053, too few to tell)", said
    # three seeds, as spread: tested, and told from noise
    rows += [base_row("base", 2, {}, accuracy=0.67), base_row("std", 2, {}, accuracy=0.97)]
    assert headline._delta(pd.DataFrame(rows), r, base, "accuracy") == \
        "+30.0 pt (3 seeds: paired t p 0.0023)"


def test_a_figure_only_some_seeds_have_counts_its_own_seeds():
    """time_to_target_s of one seed in three was exported as "n=3 seeds", "± 0"."""
    rows = [base_row("c", s, {}, accuracy=0.8 + 0.01 * s, **({"time_to_target_s": 5.0}
                                                             if s == 0 else {}))
            for s in (0, 1, 2)]
    df = pd.DataFrame(rows)
    entries = export.github_action_benchmark(export.per_suite(df))["smaller"]
    (ttt,) = [e for e in entries if e["name"].endswith("time_to_target_s")]
    assert ttt["extra"].startswith("n=1 seed;") and "range" not in ttt, ttt
    (acc,) = [e for e in export.github_action_benchmark(export.per_suite(df))["bigger"]
              if e["name"].endswith(" accuracy")]
    assert acc["extra"].startswith("n=3 seeds;") and acc["range"] == "± 0.01"
    table = export.csv_table(report.aggregate(df))
    assert pd.isna(table["time_to_target_s_std"].iloc[0]) and table["accuracy_std"].iloc[0] > 0


def test_a_score_its_seeds_agree_on_says_so_and_counts_stay_bare():
    """Two seeds at 0.415 each showed `41.5` beside n 2, read as one seed's figure."""
    rows = [base_row(cid, s, {"prune": p}, accuracy=acc + d * s, params=1000,
                     task="classification")
            for cid, p, acc, d in (("a", None, 0.415, 0.0),
                                   ("b", {"name": "l1_structured"}, 0.4, 0.01))
            for s in (0, 1)]
    agg = report.aggregate(pd.DataFrame(rows))
    text = report.table(agg, ["accuracy", "params"])
    assert "**41.5 ± 0**" in text and "40.5 ± 0.7" in text and "1,000 ± 0" not in text, text
    page = pages.suite_page(pd.DataFrame(rows), "s", baseline={"prune": "none"})
    assert "| 41.5 ± 0 " in page.split("## Every figure")[0]
    one = report.table(report.aggregate(pd.DataFrame(rows[:1])), ["accuracy"])
    assert "41.5 ±" not in one  # one seed: no spread to speak of
    rows[1] = {**rows[1], "accuracy": None}  # a figure one of the two seeds has
    assert "41.5 ±" not in report.table(report.aggregate(pd.DataFrame(rows)), ["accuracy"])
    assert report.fmt(0.415, float("nan"), "pct", agreed=True) == "41.5"  # not ± nan
