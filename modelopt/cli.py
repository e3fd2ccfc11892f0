"""The `modelopt` command: run, report, list (heavy imports stay inside each command)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from modelopt.cli_args import PROCESSES_HELP, add_run, add_user_code, replicates, with_examples
from modelopt.said import plain_warnings


def _err(msg: str, code: int = 2) -> int:
    print(f"modelopt: error: {msg}", file=sys.stderr)
    return code


# what a record no run writes raises past record.py's checks (written.blame says whose)
_SHAPES = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def _not_ours(dirs, exc: Exception) -> int:
    from modelopt.results import store, written

    return _err(written.blame([store.results_path(d) for d in dirs], exc))


def _execute(suite, out: Path, launched, args, progress):
    """The run itself: this process's share of a torchrun launch, or the whole suite."""
    from modelopt.run import launch, runner

    both = dict(resume=not args.no_resume, force=args.force, fail_fast=args.fail_fast,
                on_record=progress.record, on_plan=progress.plan, on_timing=progress.timing,
                timing_processes=args.timing_processes, train_once=not args.train_each,
                timing_stage=not args.no_timing)
    if launched:
        return launch.run(suite, out, launched, jobs=args.jobs or runner.default_jobs(), **both)
    return runner.run(suite, out, jobs=args.jobs, shard=args.shard, executor=args.executor,
                      ray_address=args.ray_address, **both)


def _plan(suite, out: Path, args) -> int:
    """`plan` / `run --dry-run`: the plan, and whether `run` would refuse the directory."""
    from modelopt.results import store
    from modelopt.run import runner
    from modelopt.run.preview import plan

    try:
        print(plan(suite, out, args.jobs or runner.default_jobs(), shard=getattr(args, "shard", None),
                   train_once=not getattr(args, "train_each", False)))
    except store.ResultsError as exc:
        return _err(str(exc))
    return 0


def cmd_run(args) -> int:
    from modelopt.results import store
    from modelopt.results.latency import TimingError
    from modelopt.run import launch, runner
    from modelopt.run.processes import sigterm_as_interrupt
    from modelopt.run.progress import Progress, cell_labels, ending
    from modelopt.spec.suite import SuiteError, load

    try:
        launched = launch.from_env()
    except launch.LaunchError as exc:
        return _err(str(exc))
    if launched and (args.shard or args.executor != "local"):  # said once, by rank 0
        return _err("under torchrun, --shard and --executor do not apply: the launched ranks "
                    "train each ddp cell together") if launched.rank == 0 else 2
    try:
        suite = load(args.suite, launched.world if launched else None)
        runner.check_figures(suite)
    except SuiteError as exc:
        code = _err(str(exc))  # said first: rank 0 may start long after this rank
        launch.tell_rank0(launched, str(exc))
        return code
    out = Path(args.out or Path("results") / suite.name)
    if args.dry_run:
        return _plan(suite, out, args)
    if not (launched and launched.rank != 0):
        from modelopt.results.labels import axis_labels
        from modelopt.run.preview import narrowed

        rows = axis_labels([c.as_config() for c in suite.cells]).values.tolist()
        jobs = args.jobs or runner.default_jobs()  # a launched rank has its node's cores
        for warning in [*suite.warnings, *([] if launched else narrowed(suite, jobs, rows))]:
            print(f"modelopt: warning: {warning}", file=sys.stderr)
    if launched and launched.rank != 0:
        args.quiet = True  # rank 0 reports and writes; the others only train
    progress = Progress(suite.name, out, args.quiet, cell_labels(suite), dict(suite.expected_failures))
    sigterm_as_interrupt()  # SIGTERM ends the run as Ctrl-C does: cells ended, results kept
    try:
        summary = _execute(suite, out, launched, args, progress)
        if launched and launched.rank != 0:
            return 130 if summary.interrupted else 0
    except (runner.ResumeError, launch.LaunchError, store.ResultsError) as exc:
        return _err(str(exc))  # a full disk too: the records written are whole
    except TimingError as exc:  # the cells' results are kept; `modelopt time` retries
        return _err(f"{exc}; the results are kept: `modelopt time {out} --suite {suite.path}` "
                    "times them again", 1)
    except ImportError as exc:  # Ray's hint for Ray's absence only (a plugin's is its own)
        ray = (getattr(exc, "name", None) or "").split(".")[0] == "ray"
        return _err(f"{exc}" + ("; --executor ray needs Ray: pip install 'modelopt[ray]'" * ray))
    progress.close()
    ending(summary, suite, out, getattr(args, "shard", None))
    if summary.interrupted:
        print("interrupted: finished results are kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    return 1 if summary.failed else 0


def cmd_report(args) -> int:
    from modelopt.results import latency, page, store

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        df = store.load([Path(d) for d in args.dirs])
        docs = store.timings([Path(d) for d in args.dirs])
        metas = {}
        for d in args.dirs:  # what `modelopt run` noted about the suite beside its results
            meta = store.read_meta(d)
            if meta is not None:
                metas[meta.suite] = meta.kept()  # of its records' suite (store.load)
    except store.ResultsError as exc:
        return _err(str(exc))
    if df.empty:
        return _err("no results to report")
    pages = []
    for suite in df["suite"].unique():
        try:
            n = _report_suite(df, suite, out, metas.get(suite, {}), docs.get(suite), args.csv)
        except _SHAPES as exc:
            return _not_ours(args.dirs, exc)
        pages.append((suite, f"{suite}.md", n))
        print(f"wrote {out / (suite + '.md')}" + ("" if docs.get(suite) or not any(
              latency.artifacts(d) for d in args.dirs) else
              " (not timed: no latency or speed-ups; `modelopt time DIR` times them"
              + (", since models were saved after its timing.json" if any(
                  latency.stale(d) for d in args.dirs) else "") + ")"), file=sys.stderr)
    index = out / "README.md"
    listed = page.index_entries(index.read_text() if index.is_file() else "")
    known = {k: v for k, v in listed.items() if (out / v[1]).is_file()} | {p[0]: p for p in pages}
    index.write_text(page.index_page(sorted(known.values())))
    return 0


def _report_suite(df, suite: str, out: Path, meta: dict, doc: dict | None, csv: bool) -> int:
    """One suite's page, figures and (with `csv`) table; returns its number of cells."""
    import pandas as pd

    from modelopt.results import export, headline, page, plots, report

    d = df[df["suite"] == suite]
    agg = report.aggregate(d)
    embedded = []
    for title, slug, fig in plots.suite_figures(d, agg):
        name = f"{suite}_{slug}.png"
        plots.save(fig, out / name)
        embedded.append((title, name))
    planned = {(c, seed): (meta.get("labels") or {}).get(c, "") for c in meta.get("cells") or []
               for seed in meta.get("seeds") or []}
    text = page.suite_page(df, suite, embedded, meta.get("description", ""),
                           meta.get("baseline"), doc, meta.get("expected_failures"), planned)
    (out / f"{suite}.md").write_text(text)
    if csv:
        parts = [headline.add_speedups(part, doc, report.baselines(part, meta.get("baseline"))[0])
                 for _, part in agg.groupby("task", sort=False)]  # a task's own baseline
        export.csv_table(pd.concat(parts)).to_csv(out / f"{suite}.csv", index=False)
    return len(agg)


def cmd_merge(args) -> int:
    from modelopt.results import store
    from modelopt.run import merge, runner

    try:
        n, left, missing = merge.merge(args.dirs, args.out)
    except (runner.ResumeError, store.ResultsError) as exc:
        return _err(str(exc))
    twice = (f"; left out {left} duplicate(s): a cell x seed an earlier directory already "
             "gave" if left else "")
    print(f"merged {n} cell x seed results into {Path(args.out) / 'results.jsonl'}{twice}; "
          f"time their saved models side by side with `modelopt time {args.out}`", file=sys.stderr)
    if missing:  # a shard left out, or not finished
        print(f"modelopt: warning: {len(missing)} of the suite's runs have no result in these "
              f"directories: {'; '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
              "(a shard not merged or not finished?)", file=sys.stderr)
    return 0


def cmd_list(args) -> int:
    from modelopt.spec import plugins
    from modelopt.spec.listing import listing

    try:  # found as compare's --plugins are: installed, on PYTHONPATH or in this folder
        print(listing(plugins.context(args.plugins, os.getcwd()) if args.plugins else None))
    except plugins.PluginError as exc:
        return _err(str(exc))
    return 0


def cmd_compare(args) -> int:
    from modelopt.results import compare, gate_page, store
    from modelopt.run.timing import UserCode, time_saved
    from modelopt.spec.suite import SuiteError

    def progress(k: int, n: int, note: str = "") -> None:
        print(f"re-timing both runs' models side by side: process {k + 1} of {n}"
              + (f" ({note})" if note else ""), file=sys.stderr)

    try:
        user = UserCode.given(args.suite, args.plugins)
    except SuiteError as exc:
        return _err(str(exc))

    def timer(items, plan, pairs, progress):
        return time_saved(items, user, plan, progress=progress, pairs=pairs)

    try:
        # the runs' own figures first (thresholds may name them), the suites' tolerances
        rules, said = compare.tolerances(compare.declare_side(args.baseline),
                                         compare.declare_side(args.current), args.fail_on or [])
        cmp = compare.compare(args.baseline, args.current, rules,
                              allow_missing=args.allow_missing,
                              timer=None if args.no_retime else timer,
                              processes=args.timing_processes, progress=progress)
        cmp.tolerances = said
    except (compare.CompareError, store.ResultsError) as exc:
        if args.out:  # what a pull request's comment then says, instead of nothing
            Path(args.out).write_text(f"**modelopt compare could not compare** (exit 2): {exc}\n")
        return _err(str(exc))
    text = gate_page.markdown(cmp, rules, all_rows=args.all)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    print(gate_page.summary(cmp).replace("**", ""), file=sys.stderr)
    return 1 if cmp.failed else 0


def cmd_time(args) -> int:
    from modelopt.results import latency, store
    from modelopt.run import runner, timing
    from modelopt.spec.suite import SuiteError

    def progress(k: int, n: int, note: str = "") -> None:
        print(f"timing process {k + 1} of {n}" + (f" ({note})" if note else ""),
              file=sys.stderr)

    try:
        recs = store.read(args.dir)
        store.read_meta(args.dir)  # a malformed one is said now, not after timing
        user = timing.UserCode.given(args.suite, args.plugins)
        ok = {r.key for r in recs if r.ok}
        saved = latency.artifacts(args.dir, ok)  # a linked model: refused, said
    except (store.ResultsError, SuiteError) as exc:
        return _err(str(exc))
    if len(suites := {r.suite for r in recs}) != 1:
        return _err(f"{args.dir}: holds {len(suites)} suites; time one run at a time")
    if not saved:
        return _err(f"{args.dir}: no saved models of ok cells under {latency.MODELS_DIR}/")
    try:
        with runner.writer_lock(Path(args.dir)):
            n = timing.run_stage(args.dir, suites.pop(), ok, {r.cell_id: r.cell for r in recs},
                                 user, plan=latency.Plan.given(args.processes),
                                 progress=progress,
                                 keep_timed=not args.force)
    except latency.TimingError as exc:
        return _err(str(exc), 1)
    except (runner.ResumeError, store.ResultsError) as exc:
        return _err(str(exc))
    doc = latency.read(args.dir) or {}
    for key, why in sorted((doc.get("not_retimeable") or {}).items()):
        print(f"not timed: {key}: {why}", file=sys.stderr)
    stopped = doc.get("stopped")  # how precise, said at the end
    print(f"timed {n} models{f' ({stopped})' * bool(stopped)}; wrote {args.dir}/{latency.TIMING_FILE}",
          file=sys.stderr)
    return 0 if n else 1


def cmd_export(args) -> int:
    from modelopt.results import export, store

    EXPORTERS = {"github-action-benchmark": export.github_action_benchmark}

    try:
        df = store.load([Path(d) for d in args.results])
    except store.ResultsError as exc:
        return _err(str(exc))
    if df.empty:
        return _err(f"no results to export in {', '.join(args.results)}")
    try:
        entries = EXPORTERS[args.format](tables := export.per_suite(df))
        for note in export.left_out(tables, args.results):
            print(f"modelopt: warning: {note}", file=sys.stderr)
    except _SHAPES as exc:
        return _not_ours(args.results, exc)
    out = Path(args.out)
    if empty := [d for d in ("bigger", "smaller") if not entries[d]]:  # neither file, then
        return _err(f"no {empty[0]}-is-better figures to export (no ok cells?)")
    out.mkdir(parents=True, exist_ok=True)
    for direction, name in (("bigger", "bigger_is_better.json"), ("smaller", "smaller_is_better.json")):
        (out / name).write_text(json.dumps(entries[direction], indent=1) + "\n")
        print(f"wrote {out / name} ({len(entries[direction])} entries)", file=sys.stderr)
    return 0


def cmd_images(args) -> int:
    from modelopt.techniques.images import write_digits

    n = write_digits(args.dest, args.size)
    print(f"wrote {n} images to {args.dest}/<digit>/ ({args.size}x{args.size} PNG); use it as "
          f"`dataset: {{name: imagefolder, root: {args.dest}, channels: 1, "
          f"image_size: {args.size}}}`", file=sys.stderr)
    return 0


def _add_compare(sub) -> None:
    c = sub.add_parser("compare", help="baseline vs current: exit 1 on a regression")
    c.add_argument("baseline", help="results directory, results.jsonl or pytest-benchmark JSON")
    c.add_argument("current", help="results directory, results.jsonl or pytest-benchmark JSON")
    c.add_argument("--fail-on", action="append", metavar="METRIC:TOL",
                   help="tolerance, e.g. latency_ms_p50:15%% or accuracy:0.5 (points); repeatable")
    c.add_argument("--all", action="store_true", help="list every figure, not only changes")
    c.add_argument("--out", help="also write the markdown table to this file")
    c.add_argument("--allow-missing", action="store_true",
                   help="cells on one side only do not fail the gate")
    c.add_argument("--no-retime", action="store_true",
                   help="do not re-time the two runs' saved models (latency is then not gated)")
    c.add_argument("--timing-processes", type=replicates, default=None, help=PROCESSES_HELP)
    add_user_code(c)
    c.set_defaults(fn=cmd_compare)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modelopt", description="Benchmark model-optimization "
                                "techniques: accuracy, size, FLOPs, latency, memory.")
    from modelopt import __version__

    p.add_argument("--version", action="version", version=f"modelopt {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    add_run(sub, cmd_run)
    rep = sub.add_parser("report", help="markdown tables and plots from results directories")
    rep.add_argument("dirs", nargs="+", help="results directories (or results.jsonl), one per suite")
    rep.add_argument("--out", default="reports", help="output directory (default reports/)")
    rep.add_argument("--csv", action="store_true", help="also write the aggregated table as CSV")
    rep.set_defaults(fn=cmd_report)
    _add_compare(sub)
    t = sub.add_parser("time", help="(re-)time every saved model of a results directory side "
                       "by side (after merge, or to refresh latency)")
    t.add_argument("dir", help="results directory")
    t.add_argument("--processes", "--timing-processes", type=replicates, default=None,
                   help=PROCESSES_HELP)
    t.add_argument("--force", action="store_true", help="replace timing.json even where models "
                   "it timed cannot be timed again (their latency is dropped)")
    add_user_code(t)
    t.set_defaults(fn=cmd_time)
    e = sub.add_parser("export", help="write the figures for a dashboard (a benchmark "
                       "history), not the models: report's page lists their files")
    e.add_argument("results", nargs="+", help="results directories")
    e.add_argument("--format", choices=["github-action-benchmark"], default="github-action-benchmark",
                   help="github-action-benchmark: its customBiggerIsBetter and "
                   "customSmallerIsBetter JSON")
    e.add_argument("--out", default="benchmark-export", help="output directory (default benchmark-export/)")
    e.set_defaults(fn=cmd_export)
    m = sub.add_parser("merge", help="combine shard directories of one suite")
    m.add_argument("dirs", nargs="+", help="results directories (from --shard runs)")
    m.add_argument("--out", required=True, help="new results directory")
    m.set_defaults(fn=cmd_merge)
    ls = sub.add_parser("list", help="every registered technique with its parameters")
    ls.add_argument("--plugins", action="append", metavar="MODULE", help="your plugin module "
                    "to list too (repeatable; installed, on PYTHONPATH or in this folder)")
    ls.set_defaults(fn=cmd_list)
    im = sub.add_parser("images", help="write a built-in dataset out as an image folder "
                        "(class sub-folders of PNG files), for the imagefolder dataset")
    im.add_argument("dataset", choices=["digits"], help="scikit-learn's 8x8 digits (1,797)")
    im.add_argument("dest", help="folder to write")
    im.add_argument("--size", type=int, default=32, help="side in pixels (default 32)")
    im.set_defaults(fn=cmd_images)
    with_examples(p, sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    plain_warnings()
    try:
        return args.fn(args)
    except BrokenPipeError:  # `modelopt list | head`: the reader left, nothing went wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
