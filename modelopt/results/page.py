"""The markdown page of one suite, and the index of all of them. Pure: DataFrames in,
strings out; only the command writes files."""

from __future__ import annotations

import math
from collections import Counter

import pandas as pd
from tabulate import tabulate

from modelopt.results import metrics as M
from modelopt.results import tasks
from modelopt.results.floors import floor_notes
from modelopt.results.headline import UNTESTED, add_speedups, cross_device_note, headline
from modelopt.results.labels import joined, label_columns
from modelopt.results.report import (
    aggregate,
    baselines,
    cost_metrics,
    declared_figures,
    table,
    without_baseline,
)
from modelopt.results.runtimes import int8_notes, kernels_note, runtime_table
from modelopt.results.sides import Machine
from modelopt.results.tables import (
    cv_table,
    deploy_table,
    distill_table,
    failures,
    scaling_table,
    tune_table,
)


def describe_env(df: pd.DataFrame) -> dict:
    """Where the records came from. A results directory can hold runs of other commits,
    torch versions or machines (a run resumed later): each value is then named with how
    many records have it."""
    envs = [e for e in df["env"] if e] or [{}]
    # a cell that never ran (skipped, or failed before it started) records its commit alone
    ran = [e for e in envs if "torch" in e] or envs

    # flags told by those every record looked for: a record from before the list grew is
    # the same CPU, not another (sides.Machine)
    looked = [Machine.of(e).checked for e in ran if "cpu" in e]
    common = frozenset.intersection(*looked) if looked else frozenset()

    def cpu(env: dict) -> str:
        flags = [f for f in (env.get("cpu_flags") or "").split() if f in common]
        return env.get("cpu", "?") + (f", {' · '.join(flags)}" if flags else "")

    dates = df["started_at"].dropna()
    return {"torch": _each([e.get("torch") for e in ran]), "cpu": _each(map(cpu, ran)),
            "device": _each([e.get("device") for e in ran]),
            "commit": _each([e.get("git_commit") for e in envs]),
            "threads": _each([e.get("threads") for e in ran]),
            "date": str(dates.max())[:10] if len(dates) else "?"}


def _each(values) -> str:
    """One value as it is; several, each with its number of records, the most common first."""
    counts = Counter("?" if v is None else str(v) for v in values)
    if len(counts) == 1:
        return next(iter(counts))
    return "; ".join(f"{v} ({n} records)" for v, n in counts.most_common())


# the legend of the figures every page has, whatever the suite
BOLD = ("**bold**: the best of a column, and every figure within the best's own standard "
        "deviation over seeds: a difference that small is the best's seed-to-seed noise")
OF_TEST = ("of the test split, by the model that ships (after its last training step; as "
           "loaded where a cell trains none)")
COUNTS = ("- FLOPs: one sample's forward pass, torch.utils.flop_counter (2 per multiply-add, "
          "zeros counted); latency: per call at batch 1 and at the training batch size, median "
          "over the timing processes of each process's median block; size: bytes of what "
          "ships, the saved state_dict (eager, compile) or the runtime's file (export's "
          "package, the ONNX model of ONNX Runtime and OpenVINO), which holds the graph "
          "beside the weights: tens of kB that outweigh the weights of a very small model, "
          "so int8 there can read larger than the float state_dict")
SPEEDUPS = ("- speed-up: the baseline's batch latency over the shipped model's (*batch-1*: at "
            "batch 1, one request at a time), the ratio taken within each timing process, mean "
            "and 95 % t-interval over the processes; **≈** "
            "marks a difference within noise (an interval that includes 1, or a test with "
            "p ≥ 0.05; not marked, a Δ the test tells from noise, not one large enough to "
            "matter); a Δ over seeds says its test, *(3 seeds: paired t p …)*, the seeds' "
            "figures paired; with two seeds that t-test has one degree of "
            "freedom, and a Δ it cannot tell from noise is marked *(2 seeds: … too few to "
            "tell)* rather than ≈ (a real 30-point gain can read so): run three seeds to test "
            "it; a Δ of one seed, or of seeds whose figures tie "
            "(a loaded model evaluated as it is: copies, counted once; other ties averaged "
            "sample by sample), is tested on the test samples instead, the two models paired "
            "sample by sample: *(McNemar p …)*, McNemar's exact test on the samples only one "
            "of them got right (accuracy); *(randomization p …)*, its sign-flip form for "
            "seeds averaged; *(paired t p …)*, a paired t-test of the per-sample losses (R²'s "
            "squared errors, a text window's cross-entropy). That is the split's own sampling "
            "noise; a model's training variance over seeds is not in it. One marked "
            f"*({UNTESTED[0]})* or *({UNTESTED[1]})* has nothing to pair: no per-sample "
            "outcomes kept (a plugin task, older results), outcomes of another test split "
            "than its baseline's, or outcomes that do not fit the record's figures")


def _test_split(d: pd.DataFrame, one_dataset: bool) -> str:
    """How many samples a figure is of (what a point is), and with one split what a sample
    is worth."""
    if "test_samples" not in d.columns or not d["test_samples"].notna().any():
        return ""
    sizes = sorted({int(n) for n in d["test_samples"].dropna()})
    span = f"{sizes[0]:,}" + (f" to {sizes[-1]:,}" if len(sizes) > 1 else "")
    lengths = sorted({int(n) for n in d.get("seq_len", pd.Series(dtype=float)).dropna()})
    if set(d.get("task", ())) == {"language_modelling"} and len(sizes) == len(lengths) == 1:
        # a window of a text predicts each of its tokens: the tokens are what a figure is of
        return (f" (test split: {span} windows of {lengths[0]} tokens, "
                f"{sizes[0] * lengths[0]:,} tokens predicted)")
    return (f" (test split: {span} samples)"
            + (_grain(d, sizes[0]) if len(sizes) == 1 and one_dataset else ""))


def _cut(d: pd.DataFrame) -> str:
    """The share of texts longer than max_length, whose tails no model saw."""
    if "truncated_share" not in d.columns or not (d["truncated_share"].fillna(0) > 0).any():
        return ""
    most = d.loc[d["truncated_share"].idxmax()]  # its own length: cells may differ
    share, length = most["truncated_share"], most.get("seq_len")
    return (f"; {100 * share:.0f} % of the texts cut at max_length"
            + ("" if pd.isna(length) else f" {int(length)}") + " (their tails never read)")


def _val_split(d: pd.DataFrame) -> str:
    """How many samples the choice was made on: settings a point apart on 150 samples are
    one or two samples apart."""
    if "val_samples" not in d.columns or not d["val_samples"].notna().any():
        return ""
    sizes = sorted({int(n) for n in d["val_samples"].dropna()})
    span = f"{sizes[0]:,}" + (f" to {sizes[-1]:,}" if len(sizes) > 1 else "")
    grain = (f" (one sample: {100 / max(sizes[0], 1):.2g} pt of accuracy)"
             if "accuracy" in d.columns else "")
    return (f" The validation split holds {span} samples{grain}: settings closer than their "
            "seeds' spread, or than a few samples, are not told apart.")


def _grain(d: pd.DataFrame, n: int) -> str:
    """What one test sample is worth in accuracy, and the split's own sampling noise at the
    cells' accuracy: a loaded model evaluated once has no seeds to show it, and +11 pt on
    18 samples is two images."""
    if "accuracy" not in d.columns or d["accuracy"].dropna().empty or n < 1:
        return ""
    p = float(d["accuracy"].dropna().median())
    half = 1.96 * math.sqrt(max(p * (1 - p), 0.5 / n) / n)  # never 0 at 100 % or 0 %
    return (f", where one sample is {100 / n:.2g} pt of accuracy and an accuracy near "
            f"{100 * p:.0f} % has a 95 % binomial interval of ±{100 * half:.2g} pt")


def suite_page(df: pd.DataFrame, suite: str, plots: list[tuple[str, str]] = (),
               description: str = "", baseline: dict | None = None,
               timing_doc: dict | None = None, expected: dict[str, str] | None = None,
               planned: dict[tuple[str, int], str] | None = None) -> str:
    """The markdown page of one suite: its headline table, then every figure; `expected`:
    why the suite expects a cell to fail, by cell id (its expect_failure); `planned`: every
    run (cell_id, seed) the suite has, with its cell's label (suite.json's), to name those
    without results."""
    d = df[df["suite"] == suite]
    agg = aggregate(d)
    env = describe_env(d)
    seeds = sorted(d["seed"].unique().tolist())
    datasets = ", ".join(sorted({c["dataset"]["name"] for c in d["cell"]}))
    datasets += _test_split(d, one_dataset="," not in datasets) + _cut(d)
    trained = _weights(d["cell"])
    if trained:  # where the models came from, named even when every cell shares them
        datasets += f" · **trained weights**: {trained}"
    lines = [f"# {suite}", ""]
    if description:  # plain text: read from a file, it opens no heading, link definition
        lines += [description.strip().lstrip("#").replace("[", "\\["), ""]  # or image
    primary = tasks.headline_of(agg["task"])
    lines += [
        f"- **cells**: {len(agg)} × **seeds** {seeds} (n per row = seeds that finished ok; "
        "`2 of 3 (1 diverged)` where some did not); "
        "figures are mean ± std over seeds",
        f"- **data**: {datasets} · **machine**: {env['cpu']} ({env['device']}), "
        f"training threads {env['threads']}; latency: "
        + (f"every saved model timed side by side ({_timed(timing_doc)})" if timing_doc else
           "not timed (`modelopt time DIR` times the saved models side by side)"),
        f"- **torch** {env['torch']} · **commit** {env['commit']} · **date** {env['date']}",
        *filter(None, [_absent(planned or {}, set(zip(d["cell_id"], d["seed"]))),
                       kernels_note(d), *floor_notes(agg)]),
        f"- {M.TABLE[primary].title.removesuffix(' %')}: {OF_TEST}; "
        f"*{M.TABLE[primary + '_best_val'].title.removesuffix(' %')}*: at the evaluation with "
        "the best validation score (chosen on validation only; absent where the shipped model "
        f"is not a training phase's network); {BOLD}"
        if primary + "_best_val" in M.TABLE else
        f"- {M.TABLE[primary].title}: {OF_TEST}; {BOLD}",
        COUNTS, SPEEDUPS,
        "",
    ]
    lines += _chosen(d, agg, primary)
    kinds = list(dict.fromkeys(agg["task"]))
    for task in kinds:  # cells of two tasks are never ranked together
        lines += _task_sections(d, agg[agg["task"] == task], task, baseline, timing_doc,
                                f" ({task} cells)" if len(kinds) > 1 else "")
    lines += _comparisons(d, agg, primary)
    fails = failures(agg, expected or {})
    if fails:
        lines += ["## Cells that did not finish ok", "", fails, ""]
    for title, path in plots:
        lines += [f"## {title}", "", f"![{title}]({path})", ""]
    return "\n".join(lines)


def _chosen(d: pd.DataFrame, agg: pd.DataFrame, primary: str) -> list[str]:
    """A tuned suite's choice, or a cross-validated suite's figures over its folds: its
    result, first; each setting's or fold's row follows."""
    tune, cv = tune_table(agg, primary), cv_table(d, agg, primary)
    if tune:
        return ["## Tuned: the best setting per cell, chosen on validation", "",
                "Each row's setting has the best mean validation score over the seeds; the "
                "test figure beside it was never used for the choice." + _val_split(d),
                "", tune, ""]
    if cv:
        return ["## Cross-validated: each cell over its folds", "", CV_WORDS, "", cv, ""]
    return []


CV_WORDS = (
    "Each of the k folds of the training split is the validation split once, while the model "
    "trains on the other k − 1 (with 2 folds, on half the training split: its figures sit below "
    "a model trained on all of it). Figures are mean ± std over every fold × seed; test is the "
    "test split, which takes no part in any fold. Δ is each row's test figure less the first "
    "row's, per seed the mean over its folds (one whole cross-validation each), paired by seed, "
    "with a 95 % t-interval over the seeds: the folds of one seed share training samples and "
    "the test split, so they are not independent replicates; with one seed, Δ has no "
    "interval. The rows below, one per fold, are single folds.")


def _comparisons(d: pd.DataFrame, agg: pd.DataFrame, primary: str) -> list[str]:
    """The sections of the tables that apply: distillation, deploy formats, folds, and the
    files each cell left in the run directory."""
    lines = []
    kd = distill_table(agg)
    if kd:
        lines += ["## Distillation: teacher, student from scratch, student distilled", "",
                  kd, ""]
    kinds = list(dict.fromkeys(agg["task"]))
    for task in kinds:  # cells of two tasks are not ranked together
        ranked = deploy_table(agg[agg["task"] == task], tasks.headline(task))
        if ranked:
            lines += [f"## Deploy formats side by side"
                      f"{f' ({task} cells)' if len(kinds) > 1 else ''}", "",
                      "The batch latency of what each cell ships (the slimmed model where "
                      "structured pruning built one), and its rank among the cells shipped in "
                      "the same format (1 = fastest; ≈: another cell's latency is within 3 %, "
                      "the noise between two models of one architecture), mean ± std over "
                      "seeds.", "", ranked, ""]
    home = take_home(d, agg)
    if home:
        lines += ["## Take it home: what each cell ships, in the run directory", "",
                  "Paths relative to the run directory, seed 0 (`-1-`, `-2-`: the other "
                  "seeds). A `.pt` file holds the shipped model's state_dict under `state` "
                  "(`torch.load(path, weights_only=True)['state']`; the slimmed model's where "
                  "pruning removed channels; the float weights an int8 or bf16 / fp16 model is "
                  "made from); "
                  "a `.onnx` file is the model ONNX Runtime or OpenVINO runs; a `.pt2` file "
                  "the AOTInductor package `deploy: export` ships "
                  "(`torch._inductor.aoti_load_package(path)`) or, for static int8 shipped "
                  "eager, the exported int8 program (`torch.export.load(path).module()`, "
                  "after `import torchao.quantization.pt2e`).",
                  "", home, ""]
    return lines


def take_home(d: pd.DataFrame, agg: pd.DataFrame) -> str:
    """Per cell, the files its first ok seed left in the run directory (run/outcome.py)."""
    if "extra" not in d.columns:
        return ""
    rows = []
    ok = agg[agg["n"] > 0]
    for _, r in ok.iterrows():
        recs = d[(d["cell_id"] == r["cell_id"]) & (d["status"] == "ok")].sort_values("seed")
        files = next((e["take_home"] for e in recs["extra"]
                      if isinstance(e, dict) and isinstance(e.get("take_home"), dict)), None)
        if files:
            shipped = files.get("slimmed") or files.get("model") or []
            rows.append([joined(r, label_columns(ok), " · ", keyed=False),
                         ", ".join(f"`{f}`" for f in shipped)])
    return tabulate(rows, headers=["cell", "shipped model"], tablefmt="github",
                    disable_numparse=True) if rows else ""


def _weights(cells) -> str:
    """The trained weights files the cells' models (and KD teachers) start from, by name and
    content hash."""
    found = {}
    for cell in cells:
        teacher = ((cell.get("distill") or {}).get("teacher") or {}).get("model") or {}
        for model in (cell.get("model") or {}, teacher):
            w = model.get("weights") if isinstance(model, dict) else None
            if isinstance(w, dict) and w.get("path"):
                found[str(w["path"])] = str(w.get("sha256", ""))[:12]
    return ", ".join(f"`{p}` (sha256 {h}…)" for p, h in sorted(found.items()))


def index_page(suites: list[tuple[str, str, int]]) -> str:
    lines = ["# modelopt reports", "", "| suite | cells | page |", "|---|---|---|"]
    for name, page, n in suites:
        lines.append(f"| {name} | {n} | [{page}]({page}) |")
    return "\n".join(lines) + "\n"


def _absent(planned: dict[tuple[str, int], str], here: set[tuple[str, int]]) -> str:
    """A line naming the suite's runs with no result here (a shard not merged, a run not
    finished): else the page reads as the whole suite, a row's n as all its seeds, and the
    rows compared with a missing cell as having no baseline."""
    gone = [f"{label or cid[:8]} seed {seed}" for (cid, seed), label in planned.items()
            if (cid, seed) not in here]
    if not gone:
        return ""
    return (f"- **no results here** for {len(gone)} of the suite's {len(planned)} runs (cell × "
            f"seed): {'; '.join(gone[:5])}{' ...' if len(gone) > 5 else ''} (a shard not "
            "merged, or a run not finished)")


def _timed(doc: dict) -> str:
    """How the timing stage measured: processes × rounds, and why it stopped there."""
    why = f"; {doc['stopped']}" if doc.get("stopped") else ""
    return (f"{doc['processes']} fresh processes × {doc['rounds']} interleaved rounds, "
            f"{doc['threads']} thread{why}")


def _task_sections(d: pd.DataFrame, part: pd.DataFrame, task: str, baseline: dict | None,
                   timing_doc: dict | None, title: str) -> list[str]:
    """The headline and every figure of one task's cells, against their baselines."""
    bases, how = baselines(part, baseline)
    part = add_speedups(part, timing_doc, bases)
    lines = [f"## Headline{title}", ""]
    shown = {b["cell_id"]: b for b in bases.values()}
    if shown:
        names = "; ".join(joined(b, label_columns(part), " · ", keyed=False)
                          for b in shown.values())
        lines += [f"Baseline ({how}{' with the same other axes' if len(shown) > 1 else ''}"
                  f"): {names}.", ""]
    alone = without_baseline(part, bases, baseline)
    if alone:
        lines += [alone, ""]
    elif baseline and not shown:
        lines += ["The suite's `baseline:` matches no cell that finished ok: no relative "
                  "columns.", ""]
    lines += [headline(d, part, bases, task), ""]
    apart = cross_device_note(part, timing_doc, bases)
    lines += [apart, ""] if apart else []
    notes = int8_notes(part)
    lines += [notes, ""] if notes else []
    by_runtime = runtime_table(part, bases) if bases else ""
    if by_runtime:
        lines += [f"## Where each technique pays off: technique × runtime{title}", "",
                  "Each technique the suite ships on more than one runtime, on each: the "
                  "batch speed-up over its baseline (above), with its 95 % interval over the "
                  "timing processes, and the size of what ships (the runtime's file where it "
                  "has one).", "", by_runtime, ""]
    shown = list(tasks.info(task).columns) + cost_metrics(part)
    lines += [f"## Every figure{title}", "",
              table(part, shown + declared_figures(part, shown), sort_by=tasks.headline(task)),
              ""]
    scaling = scaling_table(part, d)
    if scaling:
        lines += ["### Scaling", "", scaling, ""]
    return lines


def index_entries(text: str) -> dict[str, tuple[str, str, int]]:
    """Suites an index page already lists (name -> (name, page, cells)), so reporting one
    suite keeps the others' links; only pages beside the index, never a path."""
    import re

    rows = re.findall(r"^\| (\S+) \| (\d+) \| \[(\S+)\]", text, re.M)
    safe = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.md")
    return {name: (name, page, int(n)) for name, n, page in rows if safe.fullmatch(page)}
