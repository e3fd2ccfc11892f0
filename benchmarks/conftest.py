"""pytest-benchmark entry point: one test per cell x seed of a suite (--suite PATH)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SUITE = ROOT / "suites" / "bench.yaml"


def pytest_addoption(parser):
    group = parser.getgroup("modelopt")
    group.addoption("--suite", default=str(DEFAULT_SUITE), help="suite YAML to benchmark")
    group.addoption("--harness", action="store_true",
                    help="also run modelopt's own benchmarks (tests marked `harness`: the gate's "
                    "false alarms and power, runner throughput); they take 10-20 minutes")
    group.addoption("--results-out", default=None,
                    help="results directory to append to (default .benchmarks/modelopt/<suite "
                    "name> in the directory pytest runs in, beside pytest-benchmark's own)")


SUITE = pytest.StashKey()  # the suite, loaded and checked once per session
# the cells a test ran but did not benchmark (diverged, failed, expected to fail): absent from
# pytest-benchmark's list, so the JSON's modelopt block keeps their status for compare
UNTIMED = pytest.StashKey()


def _load_suite(config):
    """The --suite file, loaded and checked (exit 4, pytest's usage error, naming the key)
    once, when the session is configured: before collection, so never a traceback."""
    if SUITE in config.stash:
        return config.stash[SUITE]
    from modelopt.run.runner import check_figures
    from modelopt.spec.suite import SuiteError, load

    try:
        suite = load(config.getoption("--suite"))
        check_figures(suite)
    except SuiteError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[SUITE] = suite
    return suite


def pytest_generate_tests(metafunc):
    if "cell_run" in metafunc.fixturenames:
        suite = _load_suite(metafunc.config)
        runs = suite.runs()
        from modelopt.results.labels import axis_labels

        labels = axis_labels([c.as_config() for c, _ in runs]).apply(
            lambda r: "-".join(str(v) for v in r.values), axis=1).tolist()
        metafunc.parametrize("cell_run", runs,
                             ids=[f"{lab}-seed{seed}" for lab, (_, seed) in zip(labels, runs)])


@pytest.fixture(scope="session")
def suite(request):
    return _load_suite(request.config)


@pytest.fixture(scope="session")
def untimed(request) -> list[dict]:
    """The session's cells that were run but not benchmarked (UNTIMED)."""
    return request.config.stash.setdefault(UNTIMED, [])


@pytest.fixture(scope="session")
def results_dir(request, suite):
    """Where the cells' records and models go: beside pytest-benchmark's own files, never in
    tracked files. suite.json is written as `modelopt run` writes it, so report, compare and
    `modelopt time` read the directory like any run's."""
    import warnings

    from modelopt.results import store
    from modelopt.run import runner

    # where pytest runs, as pytest-benchmark keeps its own: a `--suite PATH` elsewhere moves
    # pytest's rootdir, and the results would follow the suite file
    out = Path(request.config.getoption("--results-out")
               or request.config.invocation_params.dir / ".benchmarks" / "modelopt" / suite.name)
    try:
        old = store.read_meta(out) if (out / "suite.json").is_file() else None
        # another suite's folder is refused by prepare; this suite's earlier version is kept
        why = runner.refusal(out, old, suite) if old and old.suite == suite.name else None
        if why:  # kept, as pytest reruns its cells; a report of the folder would mix them
            warnings.warn(f"modelopt: {why}. Its earlier records stay beside this run's: give "
                          "--results-out a fresh folder to report this version alone", stacklevel=1)
        runner.prepare(out, suite, resume=False, force=True)
    except (runner.ResumeError, ValueError) as exc:  # another suite's folder: said once
        pytest.exit(f"modelopt: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
    yield out
    # then every saved model side by side, as `modelopt run` ends: the report's latency and
    # speed-ups are paired, not pytest-benchmark's one-model-at-a-time history
    if not INTERRUPTED and not request.session.shouldstop:
        def progress(k: int, n: int, note: str = "") -> None:
            print(f"\nmodelopt: timing every saved model side by side: process {k + 1} of {n}"
                  + (f" ({note})" if note else ""))

        runner.time_run(out, suite, progress=progress)


INTERRUPTED = []  # Ctrl-C or SIGTERM came: no timing stage after it


def pytest_keyboard_interrupt(excinfo):
    INTERRUPTED.append(True)  # before the session's fixtures are torn down


def pytest_configure(config):
    from modelopt.run.processes import sigterm_as_interrupt

    # SIGTERM ends the session as Ctrl-C does: the running cell's process is ended and the
    # forkserver with it, instead of being orphaned
    sigterm_as_interrupt()
    config.addinivalue_line("markers", "harness: benchmarks of modelopt itself (the gate, the "
                            "runner), not of a suite")
    _load_suite(config)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """What `modelopt compare` needs of the run beside the figures in extra_info: the figures
    the suite declares (a task's, a measure's) and its thresholds, as suite.json holds them,
    and the status of the cells that were not benchmarked."""
    if config.getoption("--harness"):
        return
    from modelopt.run.runner import declarations

    suite = _load_suite(config)
    tasks, metrics = declarations(suite)
    output_json["modelopt"] = {"suite": suite.name, "tasks": tasks, "metrics": metrics,
                               "thresholds": suite.spec.thresholds,
                               "untimed": config.stash.get(UNTIMED, [])}


@pytest.hookimpl(hookwrapper=True, tryfirst=True)  # after pytest-benchmark's own wrapper
def pytest_runtest_makereport(item, call):
    """A cell that failed was never to be timed: its failure says why, without
    pytest-benchmark's "fixture was not used at all" warning beside it (which it leaves out
    for skipped tests only)."""
    yield
    fixture = getattr(item, "funcargs", {}).get("benchmark")
    if fixture is not None and fixture.extra_info.get("status") not in (None, "ok"):
        fixture.skipped = True


def pytest_collection_modifyitems(config, items):
    """`pytest benchmarks/` runs the suite; modelopt's self-benchmarks only with --harness."""
    if config.getoption("--harness"):
        return
    keep = [i for i in items if i.get_closest_marker("harness") is None]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
