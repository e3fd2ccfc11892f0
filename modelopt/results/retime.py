"""Latency in the gate: both runs' saved models re-timed side by side in the same fresh
processes (the ratio within each process, an interval over them); cells whose code of
yours differs between the runs are judged on each run's own timing instead."""

from __future__ import annotations

import statistics
from dataclasses import replace
from typing import Callable

from modelopt.results import latency
from modelopt.results import metrics as M
from modelopt.results.files import inert
from modelopt.results.sides import Side
from modelopt.results.verdicts import CLEAR, Row, clearly_worse, decide, verdict

# a timed model's latency as a figure: (its kind, batch 1 or the batch) -> column
LATENCY = {(kind, which): figures[i] for kind, figures in M.LATENCY_FIGURES.items()
           for i, which in enumerate(("ms_batch1", "ms_batch"))}
# a causal decoder's generation, timed in the same processes: its first new token, and each
# token after it (the row's generation less its first token, per token)
LATENCY |= {(kind, field_): M.column(kind, name) for kind in M.LATENCY_FIGURES
            for field_, name in (("ms_first_token", "first_token_ms"),
                                 ("ms_per_token", "per_token_ms"))}


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
    rows_t = _per_token(timed.rows)
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
            v = clearly_worse(decide(change, metric.tolerance, significant), change,
                              metric.tolerance, r.n >= 2 and significant)
            out.append(Row(cid, name, b, c, change, v, ci=(r.ci_low - 1, r.ci_high - 1),
                           n=r.n, note="re-timed side by side"))
    return out, skipped, timed.processes


def _per_token(rows: list[dict]) -> list[dict]:
    return [{**r, "ms_per_token": latency.per_token_ms(r)} if r.get("ms_generate") is not None
            else r for r in rows]


def own_timing_rows(base: Side, cur: Side, cells: list[str], rules: dict[str, M.Metric]
                    ) -> list[Row]:
    """Cells whose code of yours differs between the two runs: re-timing would rebuild both
    models with this checkout's code, timing the baseline's weights with the current forward.
    Each run's own timing (timing.json, its processes) is compared instead, Welch's test over
    the processes: two separate runs differ by the machine as well as the code."""
    docs = [latency.current(side.run_dir) if side.run_dir else None for side in (base, cur)]
    if None in docs:
        return []
    per_side = [(_per_token(doc["rows"]), side) for doc, side in zip(docs, (base, cur))]
    out = []
    for cid in cells:
        for (kind, field_), name in LATENCY.items():
            b, c = ([r[field_] for r in rows if r["cell_id"] == side.own.get(cid, cid)
                     and r["kind"] == kind and r.get(field_) is not None]
                    for rows, side in per_side)
            if b and c:
                v, change, p, ci = verdict(rules[name], b, c)
                v = clearly_worse(v, change, rules[name].tolerance, p is not None and p < CLEAR)
                out.append(Row(cid, name, statistics.median(b), statistics.median(c), change,
                               v, p, ci, n=min(len(b), len(c)),
                               note="each run's own timing: your code differs"))
    return out


UNTIMED = "your code differs between the runs, and one has no timing of its own"


def latency_rows(base: Side, cur: Side, common: list[str], rules: dict[str, M.Metric],
                 timer: Timer | None, processes: int | None, progress, labels: dict[str, str]
                 ) -> tuple[list[Row], str, dict[str, str]]:
    """Latency rows, how they were judged (the note under the table), and the cells whose
    models could not be re-timed, with why."""
    if not timer:
        return [], ("not gated: latency from two separate runs differs by the machine as much "
                    "as by the code; re-timing was turned off (--no-retime)"), {}
    both = [c for c in common if base.ok_seeds(c) & cur.ok_seeds(c)]
    recoded = [c for c in both if None not in (base.code.get(c), cur.code.get(c))
               and base.code[c] != cur.code[c]]
    rows = own_timing_rows(base, cur, recoded, rules)
    both = [c for c in both if c not in recoded]
    untimed = {c: UNTIMED for c in recoded if not any(r.cell_id == c for r in rows)}
    note = ("not gated: latency from two separate runs differs by the machine as much as by "
            "the code; compare two results directories with their saved models to re-time "
            "them side by side")
    skipped: dict[str, str] = {}
    if both and base.run_dir and cur.run_dir and all(
            latency.artifacts(d) for d in (base.run_dir, cur.run_dir)):
        plan = latency.Plan.given(processes)
        try:
            timed, skipped, processes = retime_rows(base, cur, both, rules, timer, plan,
                                                    progress)
        except latency.TimingError as exc:  # e.g. a timing process that died
            timed, note = [], f"not gated: re-timing the saved models failed ({exc})"
        rows += timed
        if timed:
            note = (f"re-timed: both runs' saved models in the same {processes} fresh "
                    "processes, interleaved; *baseline* and *current* are each side's median "
                    "over the processes, the change (what is judged) the paired ratio, current "
                    "over baseline round by round within each process, with its 95 % interval "
                    "over the processes, so the two can differ by the noise the pairing removes")
        elif skipped:  # both sides saved models, and none could be rebuilt as recorded
            note = ("not gated: both runs saved their models, but none could be rebuilt here "
                    "to re-time side by side; latency from two separate runs differs by the "
                    "machine as much as by the code")
        if skipped:
            note += ("; not re-timed, so not gated on latency: " + "; ".join(
                f"{labels.get(c, c[:8])} ({why})" for c, why in sorted(skipped.items())))
    if recoded:
        own = sorted({labels.get(r.cell_id, r.cell_id[:8]) for r in rows
                      if r.cell_id in recoded})
        said = "; ".join(filter(None, [
            f"{len(own)} cell(s) whose code of yours differs between the runs "
            f"({'; '.join(own[:4])}{' ...' if len(own) > 4 else ''}) are judged on each run's "
            "own timing, Welch's test over its timing processes (re-timing would build both "
            "with this checkout's code): two runs differ by the machine as well" if own else "",
            "not gated: " + ", ".join(labels.get(c, c[:8]) for c in sorted(untimed))
            + f": {UNTIMED}" if untimed else ""]))
        note = f"{note}; {said}" if both else said
    return rows, note, {**skipped, **untimed}
