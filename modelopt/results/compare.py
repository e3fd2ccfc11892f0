"""Baseline vs current: the regression gate. A cell ok before and not now, or on one side
only (unless allowed), regresses; figures are judged per metric (metrics.TABLE) with the
process as the replicate: seeds, paired, for what training produces; timing processes for
re-timed latency (timing.py); training speed per unit of the machine's speed
(machine_probe_ms, timed in each cell's own process): two runs differ by the machine too."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from modelopt.results import latency, paired, sides
from modelopt.results import metrics as M
from modelopt.results.files import inert
from modelopt.results.labels import names
from modelopt.results.sides import CompareError, Side, data_note, declare_side, load_side, machines_note
from modelopt.results.stats import ALPHA, GATE_LEVEL, paired_ci, paired_p, welch_ci, welch_p
from modelopt.spec.registry import closest

# its pull-request comment is gate_page's (markdown, summary)
__all__ = ["CompareError", "Comparison", "Row", "Side", "compare", "declare_side", "load_side",
           "parse_threshold"]
PROBED = "train_samples_s"  # gated per unit of machine speed (x machine_probe_ms)
# a training speed measured over less than this (seconds of training, every seed, both
# sides) is start-up and noise: reported, not gated
MIN_TRAIN_S = 2.0
# a timed model's latency as a figure: (its kind, batch 1 or the batch) -> column
LATENCY = {(kind, which): figures[i] for kind, figures in M.LATENCY_FIGURES.items()
           for i, which in enumerate(("ms_batch1", "ms_batch"))}
# a causal decoder's generation, timed in the same processes: its first new token, and each
# token after it (the row's generation less its first token, per token)
LATENCY |= {(kind, field_): M.column(kind, name) for kind in M.LATENCY_FIGURES
            for field_, name in (("ms_first_token", "first_token_ms"),
                                 ("ms_per_token", "per_token_ms"))}


def parse_threshold(text: str) -> tuple[str, M.Metric]:
    """`latency_ms_p50:15%` (relative) or `accuracy:0.5` (absolute; points for accuracy-like
    fractions) -> (metric, the metric with that tolerance)."""
    m = re.fullmatch(r"([A-Za-z0-9_.-]+):([0-9]*\.?[0-9]+)(%?)", text.strip())
    if not m:
        raise CompareError(f"threshold {text!r}: expected METRIC:NUMBER or METRIC:NUMBER% "
                           "(e.g. latency_ms_p50:15% or accuracy:0.5)")
    name, value, pct = m.group(1), float(m.group(2)), m.group(3) == "%"
    base = M.TABLE.get(name)
    if base is None or not base.gated:
        gated = [x.name for x in M.gated()]
        raise CompareError(f"threshold {text!r}: '{name}' is not a figure the gate judges"
                           f"{closest(name, gated)}; those are: {', '.join(gated)}")
    if name in LATENCY.values() and not pct:
        raise CompareError(f"threshold {text!r}: latency is judged as a ratio of re-timed "
                           f"models; give a percentage ({name}:{value:g}%)")
    kind = "relative" if pct else "points" if base.unit == "fraction" else "absolute"
    return name, base.with_tolerance(kind, value / 100 if kind != "absolute" else value)


# ---------------------------------------------------------------- verdicts

@dataclass
class Row:
    cell_id: str
    metric: str
    baseline: float | None
    current: float | None
    change: float | None  # relative (fraction) for relative tolerances, absolute otherwise
    verdict: str  # ok | regressed | improved | noise
    p_value: float | None = None
    # the change's interval, in its units: 90 % paired over seeds (Welch's for training
    # speed); re-timed latency: 95 % of current/baseline over the timing processes
    ci: tuple[float, float] | None = None
    n: int = 0  # the replicates: paired seeds, test samples, or timing processes
    note: str = ""


def _change(metric: M.Metric, b: float, c: float) -> tuple[float, float]:
    """(change as shown, how much worse it is in the tolerance's units: > 0 is worse)."""
    change = (c - b) / abs(b) if metric.kind == "relative" and b != 0 else c - b
    return change, (-change if metric.higher_is_better else change)


def verdict(metric: M.Metric, base: list[float], cur: list[float]
            ) -> tuple[str, float, float | None, tuple[float, float] | None]:
    """Worse than the tolerance AND (with >= 2 seeds a side) a one-sided p < ALPHA in the
    direction of the change (the gate asks "worse?", and "better?", never "different?"):
    regressed; worse than the tolerance but not significant: noise. Counts (exact) have no
    noise. Figures that training produces are paired by seed; timings are not (Welch). Also
    the change's 90 % interval, in its units, whose end clears 0 exactly when p < ALPHA
    (None: one seed, or a count)."""
    b, c = statistics.fmean(base), statistics.fmean(cur)
    change, worse = _change(metric, b, c)
    test, interval = (welch_p, welch_ci) if metric.timing else (paired_p, paired_ci)
    two_sided = None if metric.kind == "exact" else test(base, cur)
    p = None if two_sided is None else two_sided / 2  # in the direction the mean moved
    ci = None if metric.kind == "exact" else interval(base, cur, GATE_LEVEL)
    if ci is not None and metric.kind == "relative" and b != 0:  # a count or a time: it
        ci = (max(ci[0] / abs(b), -1.0), ci[1] / abs(b))  # falls by 100 % at most
    return _decide(worse, metric.tolerance, p is None or p < ALPHA), change, p, ci


def _decide(worse: float, tolerance: float, significant: bool) -> str:
    """Beyond the tolerance and significant: regressed or improved; beyond it but not
    significant: noise (only a worse figure is worth reporting as such)."""
    if worse > tolerance + 1e-12:
        return "regressed" if significant else "noise"
    if -worse > tolerance + 1e-12 and significant:
        return "improved"
    return "ok"


def _figure_rows(cid: str, base: Side, cur: Side, rules: dict[str, M.Metric],
                 only: list[str] | None, trainings: dict | None = None) -> list[Row]:
    """`trainings`: the trained networks whose training figures were compared already (for
    another cell that shares them), updated here."""
    seeds = sorted(set(base.figures.get(cid, {})) & set(cur.figures.get(cid, {})))
    rows = []
    training = tuple(base.train_keys.get(cid, {}).get(s) for s in seeds)
    for name, metric in rules.items():
        if not metric.gated or (only and name not in only) or (metric.timing and name != PROBED):
            continue  # latency is judged by re-timing (below); other timings are not gated
        if name == PROBED and trainings is not None and all(training):
            if training in trainings:
                continue  # one trained network: its speed is one observation, compared once
            trainings[training] = cid
        pairs = [(base.figures[cid][s].get(name), cur.figures[cid][s].get(name)) for s in seeds]
        gone = [s for s, (b, c) in zip(seeds, pairs) if b is not None and c is None]
        if gone:  # a figure the baseline has and the current run lost is not skipped unseen
            rows.append(Row(cid, name, statistics.fmean(b for b, _ in pairs if b is not None),
                            None, None, "regressed",
                            note=f"absent in the current run (seed {', '.join(map(str, gone))})"))
            continue
        if name == PROBED:  # samples/s x probe ms: the training's speed per machine speed
            probes = [(base.figures[cid][s].get("machine_probe_ms"),
                       cur.figures[cid][s].get("machine_probe_ms")) for s in seeds]
            pairs = [(b * pb, c * pc) if None not in (b, c, pb, pc) else (None, None)
                     for (b, c), (pb, pc) in zip(pairs, probes)]
        kept = [s for s, (b, c) in zip(seeds, pairs) if b is not None and c is not None]
        pairs = [(b, c) for b, c in pairs if b is not None and c is not None]
        if not pairs:
            continue
        v, change, p, ci = verdict(metric, [b for b, _ in pairs], [c for _, c in pairs])
        # the figures shown are the products judged, so the row says so whatever else it says
        note = "× machine_probe_ms: per machine speed" if name == PROBED else ""
        n = len(pairs)
        samples = _on_samples(cid, name, kept, pairs, base, cur)
        if samples is not None and metric.kind != "exact":
            # one-sided, in the direction the figure moved; alike on every sample: no change
            p = 1.0 if samples.alike else samples.p / 2
            v, ci = _decide(_change(metric, *pairs[0])[1], metric.tolerance, p < ALPHA), None
            note, n = samples.words(), samples.n  # the samples are the replicates
        if name == PROBED and _short_training(base, cur, cid, seeds):
            v = "ok"
            note += f"; under {MIN_TRAIN_S:g} s of training: reported, not gated"
        rows.append(Row(cid, name, statistics.fmean(b for b, _ in pairs),
                        statistics.fmean(c for _, c in pairs), change, v, p, ci,
                        n=n, note=note))
    return rows


def _on_samples(cid: str, name: str, seeds: list[int], pairs: list[tuple[float, float]],
                base: Side, cur: Side) -> paired.Paired | None:
    """Where seeds cannot test a change (one seed a side, or seeds whose figures tie: a
    loaded model's copies, or a split too small to tell seeds apart, where a t-test over
    them would read p = 0), the two runs on the same test samples, where both kept how each
    sample went for `name` (spec/outcomes.py) and read the same data files."""
    alike = len({b for b, _ in pairs}) == 1 and len({c for _, c in pairs}) == 1
    if not (len(pairs) == 1 or alike) or base.data_files.get(cid) != cur.data_files.get(cid):
        return None
    return paired.on_samples(*([(side.outcomes.get(cid, {}).get(s), side.figures[cid][s])
                                for s in seeds] for side in (base, cur)), figure=name)


def _short_training(base: Side, cur: Side, cid: str, seeds: list[int]) -> bool:
    """Whether any seed on either side trained for less than MIN_TRAIN_S (or did not say)."""
    return any((side.figures[cid][s].get("train_seconds") or 0.0) < MIN_TRAIN_S
               for side in (base, cur) for s in seeds)


def _status_row(cid: str, base: Side, cur: Side) -> Row | None:
    """Seeds ok in the baseline that are not ok now (failed, timeout, diverged or absent);
    seeds not ok there and ok now (a seed the baseline never ran is compared with nothing)."""
    lost = sorted(base.ok_seeds(cid) - cur.ok_seeds(cid))
    gained = sorted((cur.ok_seeds(cid) - base.ok_seeds(cid)) & set(base.status.get(cid, {})))
    if lost:
        why = "; ".join(f"seed {s}: " + (": ".join(x for x in cur.status[cid][s] if x)
                                         if s in cur.status.get(cid, {}) else "not run")
                        for s in lost)
        return Row(cid, "status", len(base.ok_seeds(cid)), len(cur.ok_seeds(cid)), None,
                   "regressed", note=why[:300])
    if gained:
        return Row(cid, "status", len(base.ok_seeds(cid)), len(cur.ok_seeds(cid)), None,
                   "improved", note=f"seeds {gained} ok now")
    return None


# Rebuilds and times saved models side by side: timer(artifacts, plan, pairs, progress)
# -> an object with .rows (one per process and model), .skipped ({artifact key: why it
# could not be rebuilt}) and .processes (how many ran: as many as latency.Plan says the
# pairs' ratios need). The command passes the run layer's timing.time_saved with the
# user's own code; results itself never runs a model.
Timer = Callable[..., object]


def retime_rows(base: Side, cur: Side, cells: list[str], rules: dict[str, M.Metric],
                timer: Timer, plan: latency.Plan, progress=None
                ) -> tuple[list[Row], dict[str, str], int]:
    """Both runs' saved models timed in the same K processes, interleaved: per cell the
    ratio current/baseline within each process, an interval over the processes. Also
    returns, per cell, why its models could not be re-timed, and K."""
    items = []
    for cid in cells:
        seeds = base.ok_seeds(cid) & cur.ok_seeds(cid)
        for label, side in (("baseline", base), ("current", cur)):
            own = {(side.own.get(cid, cid), s) for s in seeds}  # its files' own id
            items += [replace(a, cell_id=cid, recorded=side.configs.get(cid))
                      for a in latency.artifacts(side.run_dir, own, label)]
    if not items:
        return [], {}, 0
    pairs = [({"side": "current", "cell_id": cid, "kind": kind},
              {"side": "baseline", "cell_id": cid, "kind": kind})
             for cid, kind in sorted({(a.cell_id, a.kind) for a in items})]
    timed = timer(items, plan, pairs, progress)
    rows_t = [{**r, "ms_per_token": latency.per_token_ms(r)}
              if r.get("ms_generate") is not None else r for r in timed.rows]
    skipped = {key.split(":")[1]: inert(f"{key.split(':')[0]}: {why}")  # a file's text in it
               for key, why in timed.skipped.items()}
    out = []
    for cid in cells:
        for (kind, field_), name in LATENCY.items():
            metric = rules[name]
            pick = {"cell_id": cid, "kind": kind}
            r = latency.ratio(rows_t, {**pick, "side": "current"}, {**pick, "side": "baseline"},
                             field_)
            if r is None:
                continue
            b = statistics.median(x[field_] for x in rows_t if x["side"] == "baseline"
                                  and x["cell_id"] == cid and x["kind"] == kind)
            c = statistics.median(x[field_] for x in rows_t if x["side"] == "current"
                                  and x["cell_id"] == cid and x["kind"] == kind)
            change = r.mean - 1
            # significant: the interval over the processes excludes 1 on the side of the change
            significant = r.n < 2 or (r.ci_low > 1 if change > 0 else r.ci_high < 1)
            out.append(Row(cid, name, b, c, change, _decide(change, metric.tolerance, significant),
                           ci=(r.ci_low - 1, r.ci_high - 1), n=r.n, note="re-timed side by side"))
    return out, skipped, timed.processes


@dataclass
class Comparison:
    rows: list[Row]
    only_baseline: list[str]
    only_current: list[str]
    labels: dict[str, str]
    allow_missing: bool = False
    latency: str = ""  # how latency was judged, for the note under the table
    common: int = -1  # cells on both sides; none in common is a failure whatever is allowed
    not_retimed: dict[str, str] = field(default_factory=dict)  # cell_id -> why
    machines: str = ""  # where the two sides' CPUs differ, said so
    data: str = ""  # where the two sides read different data files or your code, said so

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == "regressed"]

    @property
    def failed(self) -> bool:
        missing = bool(self.only_baseline or self.only_current) and not self.allow_missing
        return bool(self.regressions) or missing or self.common == 0


def compare(baseline: str | Path, current: str | Path,
            thresholds: dict[str, M.Metric] | None = None, metrics: list[str] | None = None,
            allow_missing: bool = False, timer: Timer | None = None,
            processes: int | None = None, progress=None) -> Comparison:
    """Baseline against current. With a `timer`, both runs' saved models are re-timed side by
    side and latency is gated; without one it is not."""
    base, cur = load_side(baseline), load_side(current)
    sides.pair_retrained(base, cur)  # retrained weights: the same cell with other weights
    if base.suite and cur.suite and base.suite != cur.suite:
        raise CompareError(f"different suites: baseline '{base.suite}', current '{cur.suite}'")
    rules = {**M.TABLE, **(thresholds or {})}
    common = [c for c in base.status if c in cur.status]
    rows: list[Row] = []
    trainings: dict = {}
    for cid in sorted(common):
        status = _status_row(cid, base, cur)
        if status:
            rows.append(status)
        rows += _figure_rows(cid, base, cur, rules, metrics, trainings)
    skipped: dict[str, str] = {}
    labels = names({**cur.configs, **{c: cfg for c, cfg in base.configs.items() if cfg}})
    note = ("not gated: latency from two separate runs differs by the machine as much as "
            "by the code; " + ("re-timing was turned off (--no-retime)" if not timer else
                               "compare two results directories with their saved models to "
                               "re-time them side by side"))
    if timer and base.run_dir and cur.run_dir and all(
            latency.artifacts(d) for d in (base.run_dir, cur.run_dir)):
        both = [c for c in common if base.ok_seeds(c) & cur.ok_seeds(c)]
        plan = latency.Plan.given(processes)
        try:
            timed, skipped, processes = retime_rows(base, cur, both, rules, timer, plan,
                                                    progress)
        except latency.TimingError as exc:  # e.g. a timing process that died
            timed, note = [], f"not gated: re-timing the saved models failed ({exc})"
        rows += [r for r in timed if not metrics or r.metric in metrics]
        if timed:
            note = (f"re-timed: both runs' saved models in the same {processes} fresh "
                    "processes, interleaved; *baseline* and *current* are each side's median "
                    "over the processes, the change (what is judged) the paired ratio, current "
                    "over baseline round by round within each process, with its 95 % interval "
                    "over the processes, so the two can differ by the noise the pairing removes")
        elif skipped:  # both sides saved models, and none could be rebuilt as recorded
            note = ("not gated: both runs saved their models, but none could be rebuilt here "
                    "to re-time side by side (below: why); latency from two separate runs "
                    "differs by the machine as much as by the code")
        if skipped:
            note += ("; not re-timed, so not gated on latency: " + "; ".join(
                f"{labels.get(c, c[:8])} ({why})" for c, why in sorted(skipped.items())))
    return Comparison(rows, sorted(set(base.status) - set(cur.status)),
                      sorted(set(cur.status) - set(base.status)), labels, allow_missing, note,
                      len(common), skipped, machines_note(base, cur),
                      data_note(base, cur, common, labels))
