"""What a run would do, before it does it (`modelopt plan`, `modelopt run --dry-run`): the
cells by the axes that vary, the seeds, what resume would skip, and a time estimate from
earlier results of the same cells."""

from __future__ import annotations

import statistics
from pathlib import Path

from tabulate import tabulate

from modelopt.results import store
from modelopt.results.labels import axis_labels
from modelopt.run import shards
from modelopt.run.runner import refusal
from modelopt.spec.schema import Suite


def earlier(out: Path, suite: Suite) -> tuple[set, dict[str, float]]:
    """(cell_id, seed) pairs already ok in `out` of the data and code the cells read now (as
    resume counts them), and each cell's median seconds there."""
    path = store.results_path(out)
    if not path.exists():
        return set(), {}
    recs = store.read(path)
    seconds: dict[str, list[float]] = {}
    for r in recs:
        if r.ok and r.duration_s:
            seconds.setdefault(r.cell_id, []).append(r.duration_s)
    return ({r.key for r in recs if r.ok and suite.current(r.cell_id, r.extra)},
            {c: statistics.median(v) for c, v in seconds.items()})


def trains_alike(suite: Suite) -> list[str]:
    """Per cell, the group of cells that train the identical network (they differ only in
    keys of later stages, spec/keys.py): trained once, by the first (`1`, `2`, ...; `-`
    alone)."""
    from modelopt.run import dense

    keys = [dense.key(c, suite.seeds[0]) for c in suite.cells]
    shared = [k for k in dict.fromkeys(keys) if keys.count(k) > 1]
    return [str(shared.index(k) + 1) if k in shared else "-" for k in keys]


def _expected(suite: Suite, labels) -> list[str]:
    """The cells the suite expects to fail, by their axes: never ok, so run on every resume."""
    named = {c.cell_id: " · ".join(map(str, labels.iloc[i])) for i, c in enumerate(suite.cells)}
    return [f"expected to fail: {named.get(cid, cid)} ({why}); it runs, and its failure does "
            "not fail the run" for cid, why in suite.expected_failures]


def plan(suite: Suite, out: Path, jobs: int, train_once: bool = True,
         shard: tuple[int, int] | None = None) -> str:
    done, seconds = earlier(out, suite)
    labels = axis_labels([c.as_config() for c in suite.cells])
    groups = trains_alike(suite) if train_once else ["-"] * len(suite.cells)
    ours = shards.keys_of(suite, shard)
    mine = [i for i, c in enumerate(suite.cells) if any((c.cell_id, s) in ours for s in suite.seeds)]
    rows, todo_s, unknown = [], 0.0, 0
    for i in mine:
        cell = suite.cells[i]
        seeds = [s for s in suite.seeds if (cell.cell_id, s) in ours]
        left = [s for s in seeds if (cell.cell_id, s) not in done]
        est = seconds.get(cell.cell_id)
        if left and est is None:
            unknown += 1
        todo_s += (est or 0.0) * len(left)
        rows.append([*labels.iloc[i].tolist(), cell.cell_id, groups[i],
                     len(seeds) - len(left), len(left),
                     f"{est:.0f}" if est is not None else "?"])
    headers = [c[5:] for c in labels.columns] + ["cell id", "trains with", "done", "to run",
                                                 "s per seed"]
    runs = len(ours)
    part = f"shard {shard[0]}/{shard[1]} of " if shard else ""
    lines = [f"{part}{suite.name}: "
             + (f"{runs} of the {len(suite.runs())} runs, of {len(mine)} cells and seeds "
                f"{sorted({s for _, s in ours})}" if shard else
                f"{len(mine)} cell{'s' * (len(mine) != 1)} x {len(suite.seeds)} "
                f"seed{'s' * (len(suite.seeds) != 1)} = {runs} run{'s' * (runs != 1)}")
             + f" ({suite.path}); results in {out}", ""]
    if shard and not runs:
        return "\n".join(lines + [f"note: {shards.empty_note(suite, shard)}"])
    lines += [f"warning: {w}" for w in suite.warnings] + ([""] if suite.warnings else [])
    lines += [tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True), ""]
    if any(g != "-" for g in groups):
        lines.append("trains with: cells of one number differ only in what happens after "
                     "training; the run trains their network once")
    todo = sum(r[-2] for r in rows)
    lines.append(f"resume: {runs - todo} of {runs} already ok, {todo} to run")
    for i, why in _unavailable(suite, mine):  # what the run records without starting it
        lines.append(f"unavailable here: {' · '.join(map(str, labels.iloc[i]))} ({why}); "
                     + ("recorded as skipped (skip_unavailable)" if suite.spec.skip_unavailable
                        else "recorded as failed (skip_unavailable: true records it skipped)"))
    lines += narrowed(suite, jobs, [labels.iloc[i] for i in mine], mine)
    lines += _expected(suite, labels)
    if todo and todo_s:
        lines.append(f"estimate: about {todo_s / max(1, jobs):.0f} s at --jobs {jobs} from earlier "
                     "results of the same cells" + (f" ({unknown} cell(s) with no ok result "
                                                     "there: not counted)" if unknown else "")
                     + ", plus starting the workers (seconds, once) and the timing stage")
    elif todo:
        lines.append("estimate: none (no earlier ok result of these cells in that directory "
                     "to time them by)")
    meta = store.read_meta(out) if out.is_dir() else None
    if meta is not None and meta.suite != suite.name:
        lines.append(f"note: `run` will refuse {out}: it holds results of suite '{meta.suite}'; "
                     "a results directory holds one suite: use another --out")
    elif why := refusal(out, meta, suite):
        lines.append(f"note: `run` will refuse {out}: {why}")
    return "\n".join(lines)


def narrowed(suite: Suite, jobs: int, labels: list, mine: list[int] | None = None) -> list[str]:
    """A note for each cell whose backend takes more cores than --jobs gives a cell (a DDP
    group's ranks x threads): it runs on --jobs cores, shared, and its speed is a busier
    machine's. `labels`: each cell's axis labels (one row per index of `mine`)."""
    from modelopt.run import backends

    out = []
    for i, label in zip(mine if mine is not None else range(len(suite.cells)), labels):
        try:
            cores = suite.cells[i].backend.build().cores()
        except backends.BackendUnavailable:
            continue  # said as unavailable
        if cores > jobs:
            out.append(f"oversubscribed: {' · '.join(map(str, label))} takes {cores} cores (its "
                       f"processes x threads); --jobs {jobs} gives a cell at most {jobs}, so its "
                       f"processes share them and its speed figures are a busier machine's "
                       f"(--jobs {cores} or more gives it its own)")
    return out


def _unavailable(suite: Suite, mine: list[int]) -> list[tuple[int, str]]:
    """The cells whose backend this machine lacks (CUDA, enough CPUs for a DDP group), and
    why: the run records them without starting them (scheduler.job)."""
    from modelopt.run import backends

    out = []
    for i in mine:
        try:
            suite.cells[i].backend.build()
        except backends.BackendUnavailable as exc:
            out.append((i, str(exc)))
    return out
