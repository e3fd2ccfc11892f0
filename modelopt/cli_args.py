"""The `modelopt` command line's arguments: their types (argparse `type=` callables) and
the parsers of the commands with many options."""

from __future__ import annotations

import argparse


def shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes I/N (e.g. 2/3), got {text!r}") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"--shard {text}: I must be in 1..N")
    return i, n


SHARD_HELP = ("run only shard I of N of the runs (cell x seed): the same split on every "
              "machine, runs that train one network kept together, about 1/N each")


def _at_least(text: str, least: int, why: str = "") -> int:
    try:
        n = int(text)
    except ValueError:
        n = least - 1
    if n < least:
        raise argparse.ArgumentTypeError(f"needs an integer >= {least}{why}, got {text!r}")
    return n


def positive(text: str) -> int:
    """A count of processes (--jobs): 1 or more."""
    return _at_least(text, 1)


PROCESSES_HELP = ("exactly this many fresh timing processes, at least 3 (default: 3, then one "
                  "more at a time, up to 5, while a speed-up's 95%% interval is wider than "
                  "±5%%: docs/explanation/measurement.md)")


def replicates(text: str) -> int:
    """Timing processes are the replicates of a latency interval: three at least."""
    return _at_least(text, 3, " (the timing processes are the replicates of an interval)")


def add_user_code(p: argparse.ArgumentParser) -> None:
    """--suite or --plugins: the user's code that rebuilds saved models (compare, time)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--suite", help="the suite file whose own code (plugins:, factories by "
                   "import path) rebuilds the saved models; nothing named in a results "
                   "directory is ever imported")
    g.add_argument("--plugins", action="append", metavar="MODULE",
                   help="a plugin module whose registered techniques rebuild saved models "
                   "(repeatable; installed, on PYTHONPATH or in the working directory); "
                   "factories named by import path need --suite")


# an example line for each subcommand's --help (and the top level's): enough to use it
# without the docs
EXAMPLES = {
    "run": "modelopt run suites/bench.yaml --out results/bench --jobs 2",
    "plan": "modelopt plan suites/bench.yaml --out results/bench",
    "report": "modelopt report results/bench --out reports --csv",
    "compare": "modelopt compare results/base results/head --out comparison.md",
    "time": "modelopt time results/bench --processes 5",
    "export": "modelopt export results/bench --out benchmark-export",
    "merge": "modelopt merge results/shard1 results/shard2 --out results/bench",
    "list": "modelopt list | less",
    "images": "modelopt images digits data/digits32 --size 32",
}


def with_examples(parser: argparse.ArgumentParser, subparsers) -> None:
    """Each subcommand's --help ends with its example; the top level's with all of them."""
    for name, sub in subparsers.choices.items():
        if name in EXAMPLES:
            sub.epilog = f"example:\n  {EXAMPLES[name]}"
            sub.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES.values())
    parser.formatter_class = argparse.RawDescriptionHelpFormatter


def add_run(sub, fn) -> None:
    """`run` and `plan` (`fn`: the command that does both)."""
    r = sub.add_parser("run", help="run a suite's cells x seeds, appending to results.jsonl")
    r.add_argument("suite", help="suite YAML file")
    r.add_argument("--out", help="results directory (default results/<suite name>)")
    r.add_argument("--jobs", type=positive, default=None, help="parallel cell processes "
                   "(default: number of cores; each cpu cell uses its `threads`)")
    r.add_argument("--no-resume", action="store_true", help="rerun cells already ok")
    r.add_argument("--resume", action="store_true", help="(the default) skip cells already ok")
    r.add_argument("--force", action="store_true", help="resume even if the suite changed: "
                   "run its new or changed cells beside the finished ones")
    r.add_argument("--shard", type=shard, help=SHARD_HELP)
    r.add_argument("--no-timing", action="store_true", help="skip the timing stage (shard "
                   "jobs: `modelopt time` times the merged directory)")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--fail-fast", action="store_true", help="stop at the first failed cell")
    g.add_argument("--keep-going", action="store_true", help="(the default) run every cell")
    r.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local processes (default) or Ray tasks (pip install 'modelopt[ray]')")
    r.add_argument("--ray-address", help="an existing Ray cluster (ray.init(address=...)); "
                   "default: start a local one")
    r.add_argument("--timing-processes", type=replicates, default=None,
                   help=PROCESSES_HELP)
    r.add_argument("--train-each", action="store_true",
                   help="every cell trains its own network, even where cells share their "
                        "training (default: trained once, reused; docs/reference/techniques.md, train once)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.add_argument("--dry-run", action="store_true",
                   help="show the plan (as `modelopt plan`) and run nothing")
    r.set_defaults(fn=fn)
    pl = sub.add_parser("plan", help="what `run` would do: cells by the axes that vary, seeds, "
                        "what resume skips, a time estimate; runs nothing")
    pl.add_argument("suite", help="suite YAML file")
    pl.add_argument("--out", help="results directory (default results/<suite name>)")
    pl.add_argument("--jobs", type=positive, default=None, help="parallel cell processes")
    pl.add_argument("--shard", type=shard, help=SHARD_HELP)
    pl.set_defaults(fn=fn, dry_run=True, executor="local")
