"""Baseline vs current: the regression gate. A cell ok before and not now, or on one side
only (unless allowed), regresses; figures are judged per metric (metrics.TABLE) with the
process as the replicate: seeds, paired, for what training produces; timing processes for
re-timed latency (timing.py); training speed per unit of the machine's speed
(machine_probe_ms, timed in each cell's own process): two runs differ by the machine too."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from modelopt.results import metrics as M
from modelopt.results import paired, sides
from modelopt.results.labels import names
from modelopt.results.retime import LATENCY, Timer, latency_rows
from modelopt.results.sides import CompareError, Side, data_note, declare_side, load_side, machines_note
from modelopt.results.stats import ALPHA
from modelopt.results.verdicts import CLEAR, Row, change_of, clearly_worse, decide, verdict
from modelopt.spec.registry import closest

# its pull-request comment is gate_page's (markdown, summary)
__all__ = ["CLEAR", "LATENCY", "CompareError", "Comparison", "Row", "Side", "Timer", "compare",
           "declare_side", "load_side", "parse_threshold", "tolerances", "verdict"]
PROBED = "train_samples_s"  # gated per unit of machine speed (x machine_probe_ms)
# a training speed measured over less than this (seconds of training, every seed, both
# sides) is start-up and noise: reported, not gated
MIN_TRAIN_S = 2.0


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


def tolerances(baseline: dict[str, str], current: dict[str, str], fail_on: list[str]
               ) -> tuple[dict[str, M.Metric], str]:
    """The tolerances to judge by: per figure, the stricter of the two suites' (a suite that
    sets none has the default), so that a change can tighten its gate and never loosen it;
    where the two are of other kinds (points, %), the baseline's. --fail-on sets one for
    both. Also a note where the suites differ, and which was used."""
    # a figure an older baseline's suite named that this version no longer judges is left
    # out (said); the current suite's and --fail-on's are checked as ever
    dropped = [k for k in baseline if not (M.TABLE.get(k) and M.TABLE[k].gated)]
    baseline = {k: v for k, v in baseline.items() if k not in dropped}
    sides = {"the baseline's suite": baseline, "the current run's suite": current}
    parsed = {who: dict(_parsed(f"{k}:{v}", who) for k, v in given.items())
              for who, given in sides.items()}
    given = dict(_parsed(text, "--fail-on") for text in fail_on)
    rules, said = {}, [f"{k}: the baseline's suite sets one, and this version of the gate does "
                       "not judge it" for k in dropped]
    for k in sorted(set(baseline) | set(current)):
        b, c = (parsed[who].get(k, M.TABLE[k]) for who in sides)
        rules[k] = c if c.kind == b.kind and c.tolerance < b.tolerance else b
        if k not in given and (b.kind, b.tolerance) != (c.kind, c.tolerance):
            said.append(f"{k}: baseline {baseline.get(k, 'default')}, current "
                        f"{current.get(k, 'default')}, judged by the "
                        f"{'current' if rules[k] is c else 'baseline'}'s")
    rules.update(given)
    return rules, ("" if not said else "The two runs' suites set other tolerances ("
                   + "; ".join(said) + "): each figure is judged by the stricter, so that a "
                   "change cannot loosen its own gate (the baseline's where the two are of "
                   "other kinds); `--fail-on METRIC:TOL` sets one for both.")


def _parsed(text: str, where: str) -> tuple[str, M.Metric]:
    try:
        return parse_threshold(text)
    except CompareError as exc:
        raise CompareError(f"{where}: {exc}") from None


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
        b_mean, c_mean = (statistics.fmean(x) for x in zip(*pairs))
        # the figures shown are the products judged, so the row says so whatever else it says
        note = "× machine_probe_ms: per machine speed" if name == PROBED else ""
        n = len(pairs)
        samples = _on_samples(cid, name, kept, pairs, base, cur)
        if samples is not None and metric.kind != "exact":
            # one-sided, in the direction the figure moved; alike on every sample: no change
            p = 1.0 if samples.alike else samples.p / 2
            v, ci = decide(change_of(metric, *pairs[0])[1], metric.tolerance, p < ALPHA), None
            note, n = samples.words(), samples.n  # the samples are the replicates
        v = clearly_worse(v, change_of(metric, b_mean, c_mean)[1], metric.tolerance,
                          p is not None and p < CLEAR)
        if name == PROBED and _short_training(base, cur, cid, seeds):
            v = "not gated"
            note += f"; under {MIN_TRAIN_S:g} s of training: reported, not gated"
        rows.append(Row(cid, name, b_mean, c_mean, change, v, p, ci, n=n, note=note))
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


def _unrun(base: Side, cur: Side) -> list[str]:
    """Baseline cells with an ok seed that the current run's suite still lists and its
    results hold nothing of: not run (stopped, skipped), never a cell the suite dropped,
    so --allow-missing does not cover them."""
    return sorted(c for c in base.status if c not in cur.status and base.ok_seeds(c)
                  and cur.planned is not None and c in cur.planned)


def _not_run(cid: str, base: Side) -> Row:
    return Row(cid, "status", len(base.ok_seeds(cid)), 0, None, "regressed",
               note="not run: the current run's suite lists this cell, and its results hold "
                    "no record of it")


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
    tolerances: str = ""  # where the two suites set other tolerances, said so
    not_run: list[str] = field(default_factory=list)  # listed by the current suite, not run

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
    unrun = _unrun(base, cur)
    rows: list[Row] = [_not_run(cid, base) for cid in unrun]
    trainings: dict = {}
    for cid in sorted(common):
        status = _status_row(cid, base, cur)
        if status:
            rows.append(status)
        rows += _figure_rows(cid, base, cur, rules, metrics, trainings)
    labels = names({**cur.configs, **{c: cfg for c, cfg in base.configs.items() if cfg}})
    timed, note, skipped = latency_rows(base, cur, common, rules, timer, processes, progress,
                                        labels)
    rows += [r for r in timed if not metrics or r.metric in metrics]
    same = Path(baseline).resolve() == Path(current).resolve()
    return Comparison(rows, sorted(set(base.status) - set(cur.status) - set(unrun)),
                      sorted(set(cur.status) - set(base.status)), labels, allow_missing, note,
                      len(common), skipped, machines_note(base, cur),
                      f"The baseline and the current run are the same, {current}: it is "
                      "compared with itself (a check of the gate, not of a change)." if same
                      else data_note(base, cur, common, labels), not_run=unrun)
