"""A run's progress on stderr, and the totals it ends with."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from modelopt.results import latency, store


class Progress:
    """A run's progress on stderr: a bar of cells on a terminal, else a line per finished cell
    (CI logs); a line per cell that is not ok; the timing stage's processes."""

    def __init__(self, suite: str, out: Path, quiet: bool, labels: dict[str, str] | None = None,
                 expected: dict[str, str] | None = None):
        self.suite, self.out, self.quiet, self.bar = suite, out, quiet, None
        self.expected = expected or {}  # cell_id -> why the suite expects it to fail
        self.lines = not quiet and not sys.stderr.isatty()
        self.t0, self.done, self.todo = time.monotonic(), 0, 0
        self.timing_t0 = self.t0  # when the latest timing process started
        self.labels = labels or {}  # cell_id -> its axes, as the report names it

    def name(self, cell_id: str) -> str:
        label = self.labels.get(cell_id)
        return f"{label} ({cell_id[:8]})" if label else cell_id

    def plan(self, todo: int, done: int) -> None:
        from tqdm import tqdm

        if done:
            print(f"resuming in {self.out}: {done} cell x seed already ok, {todo} to run "
                  "(--no-resume to run all again)", file=sys.stderr)
        self.todo = todo
        self.bar = tqdm(total=todo, unit="cell", desc=self.suite,
                        disable=self.quiet or self.lines)

    def record(self, rec) -> None:
        from tqdm import tqdm

        self.done += 1
        status = rec.status + (" (expected)" if not rec.ok and rec.cell_id in self.expected
                               else "")
        if not rec.ok:
            msg = rec.error.splitlines()[0] if rec.error else ""
            tqdm.write(f"{status}: {self.name(rec.cell_id)} seed {rec.seed}: {msg}",
                       file=sys.stderr)
        score = headline(rec)
        if self.lines:
            print(f"[{self.done}/{self.todo}] {status} {self.name(rec.cell_id)} seed {rec.seed}"
                  + score + f" ({time.monotonic() - self.t0:.0f} s)", file=sys.stderr, flush=True)
        if self.bar:
            self.bar.set_postfix_str(f"last {rec.status}" + score)
            self.bar.update(1)

    def timing(self, k: int, n: int, note: str = "") -> None:
        now = time.monotonic()
        if k == 0:
            self.close()
        # the processes time the same models: the latest one's pace estimates the rest (the
        # first also builds the runtimes' files, and an average with it overstated the rest 2x)
        last, self.timing_t0 = now - self.timing_t0, now
        if not self.quiet:
            left = f", about {last * (n - k):.0f} s left" if k else ""
            print(f"timing every saved model side by side: process {k + 1} of {n}{left}"
                  + (f" ({note})" if note else ""), file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def headline(rec) -> str:
    """` accuracy 0.912`: the cell's headline figure (its task's: accuracy, r2, ...)."""
    from modelopt.spec.registries import TASKS

    name = TASKS.info(rec.task).headline if rec.task in TASKS else None
    value = rec.metrics.get(name) if name else None
    return f" {name} {value:.3f}" if isinstance(value, (int, float)) else ""


def cell_labels(suite) -> dict[str, str]:
    """Each cell named by the axes that vary across the suite (`model=cnn, prune=l1_...`)."""
    from modelopt.results.labels import names

    if len(suite.cells) < 2:
        return {}
    return names({c.cell_id: c.as_config() for c in suite.cells})


def totals(out: Path, suite, shard=None) -> str:
    """The results file's count by status, of this suite's (shard's) cell x seed runs, after
    resume; a failure the suite expects counted apart, as this run's count says it."""
    from modelopt.results.record import ERRORS
    from modelopt.run import shards

    if not store.results_path(out).exists():
        return "nothing recorded yet"
    ours = shards.keys_of(suite, shard)
    recs = [r for r in store.read(out) if r.key in ours]
    by: dict = {}
    for r in recs:
        expected = r.status in ERRORS and suite.expected_failure(r.cell_id)
        status = f"{r.status} (expected)" if expected else r.status
        by[status] = by.get(status, 0) + 1
    return (("in all " + ", ".join(f"{v} {k}" for k, v in sorted(by.items())) if by else
             "in all none") + f" of {len(ours)}" + (f" (shard {shard[0]}/{shard[1]})" if shard else ""))


def ending(summary, suite, out: Path, shard=None) -> None:
    """The lines a run ends with: this run's counts and the file's totals, then what needs the
    user's eye (an empty shard, expected failures that passed, latency kept, models not
    re-timeable)."""
    from modelopt.run import shards

    counts = ", ".join(f"{v} {k}" for k, v in sorted(summary.counts.items())) or (
        "nothing finished" if summary.interrupted else "nothing to run")
    print(f"{suite.name}: this run {counts}; {totals(out, suite, shard)}; results in "
          f"{out / 'results.jsonl'}", file=sys.stderr)
    if shard and not shards.runs_of(suite, shard):
        print(f"modelopt: warning: {shards.empty_note(suite, shard)}", file=sys.stderr)
    if summary.passed_unexpectedly:
        print(f"modelopt: warning: {len(summary.passed_unexpectedly)} run(s) the suite expects "
              f"to fail (expect_failure) finished ok: {', '.join(summary.passed_unexpectedly)}; "
              "if the reason is gone, remove the entry", file=sys.stderr)
    if summary.timing_kept:  # what it could not time again was said when it timed
        print(f"nothing new to time: the saved models keep their latency from {out}/"
              f"{latency.TIMING_FILE}; `modelopt time {out}` times them again", file=sys.stderr)
        return
    doc = latency.read(out) or {}
    if doc.get("stopped") and not latency.stale(out):  # how precise the speed-ups are, said
        print(f"timing: {doc['stopped']}", file=sys.stderr)  # once at the end, if current
    for key, why in sorted((doc.get("not_retimeable") or {}).items()):
        print(f"modelopt: warning: {key}: not re-timeable ({why}); timed from this run's own "
              "copy where it had one", file=sys.stderr)
