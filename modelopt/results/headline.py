"""The headline table: per cell, the model that would ship, against its baseline (Δ paired
by seed, speed-up with its interval over the timing processes, size)."""

from __future__ import annotations

import math

import pandas as pd
from tabulate import tabulate

from modelopt.results import latency, paired, tasks
from modelopt.results import metrics as M
from modelopt.results.labels import joined, label_columns
from modelopt.results.order import ranked
from modelopt.results.report import (
    _kind,
    _title,
    baselines,
    fmt,
    n_words,
    scored,
    shipped_column,
)
from modelopt.results.runtimes import best_runtimes, speedup_words
from modelopt.results.stats import ALPHA, paired_p
from modelopt.spec import outcomes


def shipped_kind(r: pd.Series) -> str:
    """What would ship: the slimmed model where structured pruning built one, else the
    deployed model (the int8 copy, or the trained one)."""
    return "slimmed" if pd.notna(r.get(M.column("slimmed", "params"))) else "model"


def shipped_figure(r: pd.Series, name: str):
    """(mean, std) of a figure of the model that would ship."""
    col = shipped_column(r, name)
    return r.get(col), r.get(f"{col}_std")


def speedup_pairs(cells: dict[str, dict], spec: dict | None, slimmed: set[str]) -> latency.Pairs:
    """The ratios the report's speed-ups are (latency.ratio selectors): each cell's shipped
    model (slimmed where `slimmed` names it) against its baseline's model, the baselines
    chosen as the report chooses them (report.baselines; `spec`: the suite's `baseline:`).
    The timing stage measures until these are precise (latency.Plan)."""
    agg = pd.DataFrame([{"cell_id": cid, "cell": cell, "n": 1} for cid, cell in cells.items()])
    if agg.empty:
        return []
    bases, _ = baselines(agg, spec)
    return [({"cell_id": base["cell_id"], "kind": "model"},
             {"cell_id": cid, "kind": "slimmed" if cid in slimmed else "model"})
            for cid, base in sorted(bases.items()) if base["cell_id"] != cid or cid in slimmed]


def _pairs(agg: pd.DataFrame, bases: dict[str, pd.Series]) -> dict[str, tuple[str, str]]:
    """cell_id -> (its baseline's cell_id, the kind of model it ships), as speedups takes them."""
    return {r["cell_id"]: (bases[r["cell_id"]]["cell_id"], shipped_kind(r))
            for _, r in agg[agg["n"] > 0].iterrows() if r["cell_id"] in bases}


def add_speedups(agg: pd.DataFrame, doc: dict | None, bases: dict[str, pd.Series]) -> pd.DataFrame:
    """speedup_batch / speedup_batch1 and their interval ends per row: its baseline's latency
    over the shipped model's, both timed in the same processes (timing.speedups); none
    where the two ran on different devices."""
    if not bases or not doc:
        return agg
    ups = latency.speedups(doc, _pairs(agg, bases))
    out = agg.copy()
    for name in dict.fromkeys(k for f in ups.values() for k in f):
        out[name] = out["cell_id"].map(lambda c, n=name: ups.get(c, {}).get(n))
    return out


def cross_device_note(agg: pd.DataFrame, doc: dict | None, bases: dict[str, pd.Series]) -> str:
    """Why a row has no speed-up though both models were timed: its model ran on another
    device than its baseline's (a CUDA cell's model shipped on the CPU); "" where none did."""
    apart = latency.cross_device(doc, _pairs(agg, bases)) if bases else {}
    if not apart:
        return ""
    labels = label_columns(agg)
    rows = agg[agg["cell_id"].isin(apart)]
    names = "; ".join(f"{joined(r, labels, ' · ', keyed=False)} (timed on "
                      f"{apart[r['cell_id']][1]}, its baseline on {apart[r['cell_id']][0]})"
                      for _, r in rows.iterrows())
    return (f"No speed-up where the model that ships was timed on another device than its "
            f"baseline's: {names}. (x86 int8 kernels and ONNX Runtime's CPU provider run on "
            "the CPU.) A speed-up compares latencies on one device; the batch latency column "
            "holds each model's own, on its device. For a speed-up on the CPU, ship the "
            "baseline there too (`deploy: {name: eager, device: cpu}`, or a float "
            "`deploy: onnxruntime`) and name it as `baseline:`.")


# a Δ with nothing to test it against, as the headline marks it (page.py's legend says why)
UNTESTED = ("1 seed", "seeds alike")


def _delta(df: pd.DataFrame, r: pd.Series, base: pd.Series, key: str) -> str:
    """Δ of the primary metric against the baseline, paired by seed; ≈ marks a difference a
    paired t-test cannot tell from noise (p >= 0.05). With a single seed, or seeds whose
    figures tie (a loaded model evaluated as it is: copies, not replicates; or a tie by
    chance, where the t-test would read p = 0), the test samples are paired instead (paired.py:
    McNemar's test, a paired t-test of losses); where nothing can be paired, it says the Δ
    is untested."""

    if r["cell_id"] == base["cell_id"]:
        return "baseline"
    ok = df[df["status"] == "ok"]
    a = ok[ok["cell_id"] == base["cell_id"]].set_index("seed")[key]
    b = ok[ok["cell_id"] == r["cell_id"]].set_index("seed")[key]
    seeds = sorted(set(a.dropna().index) & set(b.dropna().index))
    if not seeds:
        return "–"
    before, after = [float(a[s]) for s in seeds], [float(b[s]) for s in seeds]
    change = b[seeds].mean() - a[seeds].mean()
    value = f"{100 * change:+.1f} pt" if M.TABLE[key].unit == "fraction" else f"{change:+.3g}"
    alike = len(set(before)) == 1 and len(set(after)) == 1
    if len(seeds) > 1 and not alike:
        p = paired_p(before, after)
        if len(seeds) == 2 and p >= ALPHA:  # one degree of freedom: 96 % vs 66 % read ≈
            return f"{value} (2 seeds: paired t p {p_words(p)}, too few to tell)"
        return f"{'≈ ' if p >= ALPHA else ''}{value} ({len(seeds)} seeds: paired t p {p_words(p)})"
    samples = _samples(ok, (base["cell_id"], r["cell_id"]), seeds, key)
    if samples is not None:
        return (f"{'≈ ' if samples.p >= ALPHA else ''}{value} "
                f"({samples.test} p {p_words(samples.p)})")
    return f"{value} ({UNTESTED[0] if len(seeds) == 1 else UNTESTED[1]})"


def p_words(p: float) -> str:
    """A p-value in two figures, or three where two would round it across ALPHA (0.0496
    is not "0.05", which would read as within noise beside a Δ not marked so); below 0.001,
    said so (1e-116 reads as a certainty the test's assumptions do not carry)."""
    if p < 0.001:
        return "< 0.001"
    text = f"{p:.2g}"
    return text if (float(text) >= ALPHA) == (p >= ALPHA) else f"{p:.3g}"


def _samples(ok: pd.DataFrame, cells: tuple[str, str], seeds: list[int], key: str
             ) -> paired.Paired | None:
    """The two cells on the same test samples, seed by seed, where their records kept how
    each sample went (spec/outcomes.py: a built-in task's figures)."""
    if "extra" not in ok.columns:
        return None
    sides = []
    for cid in cells:
        rows = ok[(ok["cell_id"] == cid) & ok["seed"].isin(seeds)].sort_values("seed")
        sides.append([(outcomes.Outcomes.read((r["extra"] or {}).get(outcomes.KEY)),
                       _numbers(r)) for _, r in rows.iterrows()])
    return paired.on_samples(*sides, figure=key)


def _numbers(r: pd.Series) -> dict:
    """A row's figures, as its record had them (a column another record filled is NaN)."""
    return {k: v for k, v in r.items() if isinstance(v, (int, float))
            and not isinstance(v, bool) and not pd.isna(v)}


def _training_speedup(df: pd.DataFrame, r: pd.Series, base: pd.Series | None) -> str:
    """Training throughput (samples/s) over the baseline's, paired by seed: the geometric
    mean of the seeds' ratios with a 95 % t-interval of their logs (a ratio's interval stays
    above 0): what a backend (AMP, DDP, threads) buys. ≈: the interval includes 1."""
    if base is None:
        return "–"
    if r["cell_id"] == base["cell_id"]:
        return "baseline"
    return ratio_words(training_ratio(df, base["cell_id"], r["cell_id"]))


def training_ratio(df: pd.DataFrame, base_id: str, cell_id: str
                   ) -> tuple[float, float, float, int] | None:
    """(geometric mean, 95 % low, high, seeds) of cell_id's training samples/s over
    base_id's, paired by seed; None without a seed both trained."""
    ok = df[df["status"] == "ok"]
    a, b = (ok[ok["cell_id"] == c].set_index("seed")["train_samples_s"]
            for c in (base_id, cell_id))
    seeds = sorted(s for s in set(a.dropna().index) & set(b.dropna().index)
                   if a[s] > 0 and b[s] > 0)
    if not seeds:
        return None
    mean, low, high = (math.exp(v) for v in latency.t_interval(
        [math.log(float(b[s] / a[s])) for s in seeds]))
    return mean, low, high, len(seeds)


def ratio_words(ratio: tuple[float, float, float, int] | None, per: float = 1.0) -> str:
    """A training ratio (divided by `per`: cores, for an efficiency) as the pages write it:
    the ratio itself marked ≈ where its interval includes 1 (no difference)."""
    if ratio is None:
        return "–"
    mean, low, high, n = ratio
    if n == 1:
        return f"{mean / per:.2f} (1 seed)"
    return (f"{'≈ ' if per == 1 and low <= 1 <= high else ''}{mean / per:.2f} "
            f"[{low / per:.2f}, {high / per:.2f}]")


def _backends_differ(ok: pd.DataFrame, bases: dict[str, pd.Series]) -> bool:
    """Whether a row trains on another backend than its baseline (AMP, DDP, threads)."""
    return "train_samples_s" in ok.columns and any(
        r["cell"].get("backend") != bases[r["cell_id"]]["cell"].get("backend")
        for _, r in ok.iterrows() if r["cell_id"] in bases)


def headline(df: pd.DataFrame, agg: pd.DataFrame, bases: dict[str, pd.Series], task: str) -> str:
    """The suite's answer in a few columns: the axes that vary, the primary metric, and for
    each cell the figures of the model that would ship (slimmed where one exists), with
    speed-up and size against its baseline and their intervals. ≈: within noise."""
    ok = agg[agg["n"] > 0]
    if ok.empty:
        return ("No cell finished ok: nothing to rank. Each cell's status and error are under "
                "*Cells that did not finish ok*.")
    key = tasks.headline(task)
    ok = ranked(ok, key, {b["cell_id"] for b in bases.values()})  # best first
    labels = label_columns(ok)
    budgets = ok["steps_total"].dropna().unique() if "steps_total" in ok.columns else []
    uneven = len(budgets) > 1  # rows trained for different numbers of steps
    fastest = best_runtimes(ok, bases) if bases else {}  # shipped on several runtimes
    trains = bool(bases) and _backends_differ(ok, bases)  # a backend is among the axes
    # at the training batch size, and at batch 1 (serving one request at a time): a runtime
    # can win at one and lose at the other
    speedups = ["speedup_batch"] + (["speedup_batch1"] if "speedup_batch1" in ok.columns
                                    and ok["speedup_batch1"].notna().any() else [])
    rows = []
    for _, r in ok.iterrows():
        params, params_sd = shipped_figure(r, "params")
        size, _ = shipped_figure(r, "size_bytes")
        lat, lat_sd = shipped_figure(r, "latency_ms_batch_p50")
        base = bases.get(r["cell_id"])
        row = [r[c] for c in labels] + [fmt(r.get(key), r.get(f"{key}_std"), _kind(key),
                                            agreed=scored(r, key))]
        if bases:
            row.append(_delta(df, r, base, key) if base is not None else "–")
        if uneven:
            row.append(fmt(r.get("steps_total"), None, "int"))
        row += [fmt(params, params_sd, "int") + (" (slimmed)" if shipped_kind(r) == "slimmed"
                                                  else ""),
                fmt(lat, lat_sd, "g3")]
        if bases:
            base_size = base.get("size_bytes") if base is not None else None
            is_base = base is not None and r["cell_id"] == base["cell_id"]
            row += ["baseline" if is_base else speedup_words(r, name) for name in speedups]
            row += [f"{size / base_size:.2f}" if size and base_size else "–"]
            row += [fastest.get(r["cell_id"], "–")] if fastest else []
            row += [_training_speedup(df, r, base)] if trains else []
        rows.append(row + [n_words(r)])
    headers = [c[5:] for c in labels] + [_title(key)]
    if bases:
        headers.append(f"Δ {key} vs baseline")
    headers += ["steps trained"] if uneven else []
    headers += ["params shipped", "batch latency ms"]
    if bases:
        headers += ["speed-up × [95 % CI]", "batch-1 speed-up × [95 % CI]"][:len(speedups)]
        headers += ["size / baseline"]
        headers += ["fastest runtime"] if fastest else []
        headers += ["training × [95 % CI]"] if trains else []
    table = tabulate(rows, headers=headers + ["n"], tablefmt="github", disable_numparse=True)
    if trains:
        table += ("\n\n*training ×*: samples per second trained, over the baseline's, paired by "
                  "seed (95 % t-interval over the seeds): what a backend (AMP, DDP, threads) "
                  "buys; a row that reused another cell's training reads that training's.")
    return table + (_budgets(ok, bases) if uneven else "")


def _budgets(ok: pd.DataFrame, bases: dict[str, pd.Series]) -> str:
    """What the headline says of rows trained for different numbers of steps: whether a Δ
    is against a baseline of another budget."""
    steps = dict(zip(ok["cell_id"], ok["steps_total"]))
    if any(c in steps and not _same(steps[c], b.get("steps_total")) for c, b in bases.items()):
        return ("\n\nRows trained for different numbers of steps (*steps trained*: training "
                "and fine-tuning of the model that ships): a Δ against a baseline of another "
                "budget may be the budget's, not the technique's. Give the baseline the same "
                "steps to tell (`match_budget: true`; docs/how-to/trained-weights.md: fair "
                "budgets).")
    if bases:
        return ("\n\nRows trained for different numbers of steps (*steps trained*); each row "
                "with a baseline is compared with one trained as many.")
    return ("\n\nRows trained for different numbers of steps (*steps trained*: training and "
            "fine-tuning of the model that ships).")


def _same(a, b) -> bool:
    """Two figures alike, where both are absent too."""
    return (pd.isna(a) and pd.isna(b)) or a == b
