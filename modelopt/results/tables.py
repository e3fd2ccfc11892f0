"""The tables a suite's page adds where they apply: tuning, cross-validation, distillation,
scaling over backends, deploy formats side by side, and the cells that did not finish ok."""

from __future__ import annotations

import json

import pandas as pd
from tabulate import tabulate

from modelopt.results import metrics as M
from modelopt.results import stats, tasks
from modelopt.results.headline import ratio_words, shipped_figure, training_ratio
from modelopt.results.labels import axis_labels, joined, label_columns, n_seeds, spec_label
from modelopt.results.order import ranked
from modelopt.results.report import _kind, _title, figure, fmt, scored


def tuned(agg: pd.DataFrame) -> pd.DataFrame:
    """Per tune group, the setting with the best mean *validation* score (never test)."""
    rows = []
    t = agg[agg["group"].map(lambda g: bool(g) and g.get("kind") == "tune") & (agg["n"] > 0)]
    if t.empty or "val_score" not in t.columns:
        return pd.DataFrame()
    for _, g in t.groupby(t["group"].map(lambda x: x["id"]), sort=False):
        # a setting some of whose seeds diverged or failed (its mean is over the survivors)
        # is chosen only where no setting kept all its seeds
        whole = g[g["n"] == g["runs"]]
        best = (whole if whole["val_score"].notna().any() else g)
        best = best.loc[best["val_score"].idxmax()].copy()
        best["chosen"] = ", ".join(f"{k}={v}" for k, v in best["group"]["values"].items()) \
            or "– (no tuned technique)"
        best["candidates"] = len(g)
        rows.append(best)
    return pd.DataFrame(rows)


def tune_table(agg: pd.DataFrame, metric: str = "accuracy") -> str:
    best = tuned(agg)
    if best.empty:
        return ""
    def untuned(cell: dict, values: dict) -> dict:  # the cell without its tuned parameters
        out = dict(cell)
        for dotted in values:
            head, _, param = dotted.partition(".")
            out[head] = {k: v for k, v in out[head].items() if k != param}
        return out

    best = best.sort_values("val_score", ascending=False)
    names = axis_labels([untuned(c, g["values"]) for c, g in zip(best["cell"], best["group"])])
    labels = list(names.columns)
    kind = _kind(metric)
    rows = []
    speed = [m for m in ("train_seconds", "steps_to_target", "time_to_target_s",
                         "target_reached") if m in best]
    for (_, r), (_, lab) in zip(best.iterrows(), names.iterrows()):
        rows.append([lab[c] for c in labels] + [
            r["chosen"], fmt(r["val_score"], r.get("val_score_std"), kind),
            fmt(r.get(metric), r.get(f"{metric}_std"), kind, agreed=scored(r, metric))]
            + [figure(r, m) for m in speed]
            + [int(r["n"]), int(r["candidates"])])
    headers = ([c[5:] for c in labels] + ["chosen on validation",
                                          "validation" + (" %" if kind == "pct" else ""),
                                          f"test {_title(metric)}"]
               + [_title(m) for m in speed] + ["n", "settings tried"])
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def cv_table(df: pd.DataFrame, agg: pd.DataFrame, metric: str = "accuracy") -> str:
    """Cross-validation: mean ± std over every fold x seed of each matrix cell, best on the
    held-out folds first (validation scores are higher-better, as `tune` chooses by), and
    each row's test figure against the first row's: per seed, the mean over its folds (one
    cross-validation each), paired by seed, with a t-interval over the seeds."""
    cv = agg[agg["group"].map(lambda g: bool(g) and g.get("kind") == "cv")]
    if cv.empty:
        return ""
    folds_of = cv.groupby(cv["group"].map(lambda x: x["id"]), sort=False)
    kind = _kind(metric)
    labels = [c for c in label_columns(cv) if c != "axis:train"]
    rows, scores, per_seed = [], [], []
    for _, g in folds_of:
        runs = df[df["cell_id"].isin(g["cell_id"]) & (df["status"] == "ok")]
        vals = pd.to_numeric(runs.get(metric), errors="coerce").dropna()
        val = pd.to_numeric(runs.get("val_score"), errors="coerce").dropna()
        rows.append([g.iloc[0][c] for c in labels] + [
            fmt(val.mean(), val.std(ddof=1), kind, agreed=len(val) > 1),
            fmt(vals.mean(), vals.std(ddof=1), kind, agreed=len(vals) > 1), len(g), len(vals)])
        scores.append({**g.iloc[0][["cell_id", *labels]], "val_score": val.mean()})
        # a seed whose folds did not all finish is no whole cross-validation: left out
        whole = runs.loc[vals.index].assign(v=vals).groupby("seed")["v"]
        per_seed.append(whole.mean()[whole.count() == len(g)].to_dict())
    order = list(ranked(pd.DataFrame(scores), "val_score").index)
    first = per_seed[order[0]]
    out = []
    for i in order:
        pairs = [(first[seed], v) for seed, v in per_seed[i].items() if seed in first]
        out.append(rows[i][:-2] + [_cv_delta(pairs, kind) if i != order[0] else "reference"]
                   + rows[i][-2:])
    headers = [c[5:] for c in labels] + ["validation (held-out fold)"
                                          + (" %" if kind == "pct" else ""),
                                          f"test {_title(metric)}",
                                          "Δ test [95 % interval over seeds]", "folds",
                                          "n (folds × seeds)"]
    return tabulate(out, headers=headers, tablefmt="github", disable_numparse=True)


def _cv_delta(pairs: list[tuple[float, float]], kind: str) -> str:
    if not pairs:
        return "–"
    ci = stats.paired_ci([b for b, _ in pairs], [c for _, c in pairs])
    scale, unit, form = (100, " pt", "+.1f") if kind == "pct" else (1, "", "+.3g")
    mean = sum(c - b for b, c in pairs) / len(pairs) * scale
    if ci is None:
        return f"{mean:{form}}{unit} (1 seed)"
    within = ci[0] <= 0 <= ci[1]  # the interval holds no difference: ≈, as the headline's
    return (f"{'≈ ' if within else ''}{mean:{form}}{unit} "
            f"[{ci[0] * scale:{form}}, {ci[1] * scale:{form}}]")


def distill_table(agg: pd.DataFrame) -> str:
    """Per distilled student: the teacher, the same student from scratch (same data, same
    seeds), the distilled student and the difference, in its task's headline figure (a
    suite may hold several tasks), mean ± std over seeds; the teacher's and the student's
    parameters and the teacher's own training time (the cost its figure hides). A note names
    teachers no better than always answering the test split's most common class."""
    ok = agg[agg["n"] > 0]
    students = ok[ok["cell"].map(lambda c: bool(c.get("distill")))]
    if students.empty:
        return ""

    def without_distill(cell):
        return json.dumps({k: v for k, v in cell.items() if k != "distill"}, sort_keys=True)

    scratch = {without_distill(c): r for c, (_, r) in zip(ok["cell"], ok.iterrows())
               if not c.get("distill")}
    labels = [c for c in label_columns(ok) if c != "axis:distill"]
    rows, blind = [], []
    all_ = [c["distill"]["teacher"] for c in students["cell"]]
    models = [t["model"] for t in all_]
    varying = {k for m in models for k in m if len({json.dumps(x.get(k)) for x in models}) > 1}
    # how else two teachers differ (their training, optimizer): named beside the model
    others = {k for t in all_ for k in t
              if k != "model" and len({json.dumps(x.get(k), sort_keys=True) for x in all_}) > 1}
    for _, r in students.iterrows():
        d, primary = r["cell"]["distill"], tasks.headline(r["task"])
        kind, base = _kind(primary), scratch.get(without_distill(r["cell"]))
        delta = "–" if base is None else (
            f"{100 * (r[primary] - base[primary]):+.1f} pt" if kind == "pct"
            else f"{r[primary] - base[primary]:+.3g}")
        teacher = f"teacher_{primary}"
        name = spec_label({k: v for k, v in d.items() if k != "teacher"}, set(d) - {"teacher"})
        if varying or others:  # two students may differ by their teacher alone
            name += f", teacher {spec_label(d['teacher']['model'], varying)}" + "".join(
                f" {k} {spec_label(d['teacher'].get(k), set(d['teacher'].get(k) or {}))}"
                for k in sorted(others))
        rows.append([r[c] for c in labels] + [
            name, _title(primary), fmt(r.get(teacher), r.get(f"{teacher}_std"), kind),
            fmt(base[primary], base[f"{primary}_std"], kind) if base is not None else "–",
            fmt(r[primary], r[f"{primary}_std"], kind), delta,
            f"{figure(r, 'teacher_params')} → {figure(r, 'params')}",
            figure(r, "teacher_train_seconds"), int(r["n"])])
        blind += _weak_teacher(r, base, primary, joined(r, labels) or name)
    headers = [c[5:] for c in labels] + ["distillation", "figure", "teacher",
                                          "student from scratch", "student distilled", "Δ",
                                          "params teacher → student", "teacher train s", "n"]
    table = tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)
    return table + "".join(f"\n\n{note}" for note in dict.fromkeys(blind))


def _weak_teacher(r: pd.Series, base: pd.Series | None, primary: str, name: str) -> list[str]:
    """What a teacher's figure says of it: no better than always answering the most common
    class (loaded: its classes in another order?; trained here: too little), or worse than
    the student it teaches trained from scratch (means over seeds)."""
    figure_, kind = r.get(f"teacher_{primary}"), _kind(primary)
    if figure_ is None or pd.isna(figure_):
        return []
    pct = " %" if kind == "pct" else ""
    said = f"{name}: teacher {fmt(figure_, None, kind)}{pct}"
    if (r.get("teacher_majority") or 0) > 0 and figure_ <= r["teacher_majority"]:
        model = r["cell"]["distill"]["teacher"]["model"]  # weights, or hf's own path
        loaded = bool(model.get("weights") or model.get("path"))
        return [f"No better than always answering the test split's most common class "
                f"({fmt(r['teacher_majority'], None, kind)}{pct}): {said}. " + (
                    "A state_dict trained with its classes in another order teaches them "
                    "wrongly: give the dataset `classes:` in the teacher's order (where it "
                    "takes them)." if loaded else "It trained too little to teach anything: "
                    "give it more steps.")]
    worse = base is not None and (figure_ < base[primary] if M.TABLE[primary].higher_is_better
                                  else figure_ > base[primary])
    return [f"A teacher worse than its student trained from scratch "
            f"({fmt(base[primary], None, kind)}{pct}) can only pull it toward worse answers: "
            f"{said}. Train it longer, or check what it trains with (a teacher takes only the "
            "keys it names)."] if worse else []


def scaling_table(agg: pd.DataFrame, df: pd.DataFrame) -> str:
    """Training throughput per backend against the one-core CPU cell of the same other axes
    (model, loss, ...): speed-up paired by seed with its 95 % interval, and efficiency
    (speed-up / cores, the cores the backend took: threads x ranks). GPU cells have no
    efficiency per core."""
    ok = agg[agg["n"] > 0]
    if ok.empty or "train_samples_s" not in agg.columns or "axis:backend" not in ok.columns:
        return ""
    backend = ok["cell"].map(lambda c: c.get("backend") or {"name": "cpu"})
    # records from before cores were recorded: threads x ranks from the backend's parameters
    guess = backend.map(lambda b: (b.get("threads") or 1) * b.get("world_size", 1))
    cores = ok["cores"].fillna(guess) if "cores" in ok.columns else guess
    on_gpu = ok["gpus"].fillna(0).gt(0) if "gpus" in ok.columns else cores.map(lambda _: False)
    others = [c for c in label_columns(ok) if c != "axis:backend"]
    rows = []
    for _, group in ok.groupby(others, sort=False) if others else [((), ok)]:
        one = group[(cores[group.index] == 1) & ~on_gpu[group.index]]
        if one.empty or len(group) < 2:
            continue  # nothing to scale against, or nothing scaled
        first = one.index[0]
        for i in [first] + [i for i in group.index if i != first]:  # the one-core cell first
            r = ok.loc[i]
            ratio = None if i == first else training_ratio(df, ok.loc[first, "cell_id"],
                                                            r["cell_id"])
            rows.append([*(r[c] for c in others), r["axis:backend"], int(cores[i]),
                         n_seeds(int(r["n"])),
                         fmt(r["train_samples_s"], r.get("train_samples_s_std"), "f0"),
                         "1 (itself)" if i == first else ratio_words(ratio),
                         "–" if on_gpu[i] or i == first else ratio_words(ratio, cores[i])])
    if not rows:
        return ""
    return tabulate(rows, headers=[c[5:] for c in others] + [
        "backend", "cores", "n", "train samples/s", "speed-up × [95 % CI]", "efficiency"],
        tablefmt="github", disable_numparse=True) + (
        "\n\n*speed-up ×*: samples per second trained over the one-core cell's, paired by "
        "seed (geometric mean, 95 % interval; ≈: it includes 1).") + (
        " A ddp row's peak RSS is its coordinating process's, not its ranks'; the ranks' time "
        "outside their training steps is `ddp_startup_s` (in `report --csv`)."
        if backend.map(lambda b: b.get("name") == "ddp").any() else "")


# two models of one architecture, timed in the same processes, read within 3 % of each other
# (docs/explanation/harness-performance.md): ranks closer than that are marked as ties
TIE = 0.03


def deploy_table(agg: pd.DataFrame, primary: str = "accuracy") -> str:
    """Per compression, the shipped model's batch latency under each deploy format (mean ±
    std over seeds) and its rank among that format's cells (1 = fastest; ≈ where another
    cell's latency is within TIE of it), with its headline figure (`primary`: accuracy,
    R², ...) and compile time: whether compiling
    changes which compression wins."""
    ok = agg[agg["n"] > 0]
    if "axis:deploy" not in ok.columns:
        return ""
    formats = list(dict.fromkeys(ok["axis:deploy"]))
    labels = [c for c in label_columns(ok) if c != "axis:deploy"]
    latency = {(tuple(r[c] for c in labels), r["axis:deploy"]):
               (shipped_figure(r, "latency_ms_batch_p50"), r) for _, r in ok.iterrows()}
    ranks = {}
    for f in formats:
        timed = sorted((lat[0], k) for (k, g), (lat, _) in latency.items()
                       if g == f and lat[0] is not None and pd.notna(lat[0]))
        for i, (ms, k) in enumerate(timed):
            near = any(abs(ms - other) <= TIE * min(ms, other)
                       for j, (other, _) in enumerate(timed) if j != i)
            ranks[(k, f)] = f"{i + 1}{' ≈' if near else ''}"
    compiled = {f for (_, f), (_, r) in latency.items()
                if pd.notna(shipped_figure(r, "compile_seconds")[0])}
    rows = []
    for k in dict.fromkeys(k for k, _ in latency):
        row = list(k)
        for f in formats:
            (mean, std), r = latency.get((k, f), ((None, None), None))
            width = 4 if f in compiled else 3
            row += ["–"] * width if r is None else [
                fmt(mean, std, "g3"), ranks.get((k, f), "–"),
                fmt(r.get(primary), r.get(f"{primary}_std"), _kind(primary)),
                fmt(*shipped_figure(r, "compile_seconds"), "f1")][:width]
        rows.append(row)
    headers = [c[5:] for c in labels] + [h for f in formats for h in (
        f"{f} batch ms", f"{f} rank", f"{f} {_title(primary)}", f"seconds to {f}")[:4 if f in compiled
                                                                           else 3]]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def failures(agg: pd.DataFrame, expected: dict[str, str] | None = None) -> str:
    """The cells with a run that did not finish ok, and why; `expected`: the suite's reason
    for a cell it expects to fail (expect_failure), by cell id."""
    expected = expected or {}
    bad = agg[agg["statuses"].map(lambda s: any(k != "ok" for k in s))]
    if bad.empty:
        return ""
    rows = []
    for _, r in bad.iterrows():
        what = ", ".join(f"{k}: {v}" for k, v in r["statuses"].items() if k != "ok")
        labels = joined(r, label_columns(agg), sep="; ")
        rows.append([labels, what, (r["error"] or "")[:160]]
                    + ([expected.get(r["cell_id"], "")] if expected else []))
    headers = ["cell", "not ok", "first error"] + (["expected, because"] if expected else [])
    return tabulate(rows, headers=headers, tablefmt="github")
