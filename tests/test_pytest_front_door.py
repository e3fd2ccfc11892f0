"""`pytest benchmarks/ --benchmark-only`: the suite and only the suite, results beside
pytest-benchmark's files, and Ctrl-C / SIGTERM ending the session with nothing left behind."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.processes import leftovers

ROOT = Path(__file__).resolve().parents[1]
SUITE = """
name: door
seeds: [0, 1, 2]
defaults:
  dataset: {name: synthetic, n_samples: 600, n_features: 10, n_classes: 3}
  model: {name: mlp, hidden: 64}
  train: {steps: STEPS, batch_size: 64, eval_every: 1000}
"""


def pytest_run(tmp_path: Path, steps: int, mark: str, *extra: str) -> subprocess.Popen:
    (tmp_path / "s.yaml").write_text(SUITE.replace("STEPS", str(steps)))
    cmd = [sys.executable, "-m", "pytest", "benchmarks/", "--benchmark-only", "-q",
           "--suite", str(tmp_path / "s.yaml"), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "MODELOPT_TEST_MARK": mark},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def cell_running(mark: str) -> bool:
    """A cell's process: a child of the forkserver."""
    servers = [p for p in leftovers(mark) if "forkserver" in " ".join(p.cmdline())]
    return any(p.children() for p in servers)


def test_the_suite_only_with_results_under_benchmarks_dir(tmp_path):
    out, saved = tmp_path / "o", tmp_path / "b.json"
    proc = pytest_run(tmp_path, 20, uuid.uuid4().hex, "--results-out", str(out),
                      f"--benchmark-json={saved}")
    text, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, text
    # the JSON carries what compare needs beside extra_info: the suite's own figures
    block = json.loads(saved.read_text())["modelopt"]
    assert block["suite"] == "door" and "accuracy" in block["tasks"]["classification"]["headline"]
    assert re.search(r"3 passed, \d+ deselected", text)  # the harness is opt-in
    assert len((out / "results.jsonl").read_text().splitlines()) == 3
    assert (out / "suite.json").is_file()  # report and compare read it like any run
    # then every saved model timed side by side, and the records name the commit, so the
    # report shows paired latency and the commit as after `modelopt run`
    assert (out / "timing.json").is_file()
    report = subprocess.run([sys.executable, "-m", "modelopt", "report", str(out), "--out",
                             str(tmp_path / "r")], cwd=ROOT, capture_output=True, text=True)
    page = (tmp_path / "r" / "door.md").read_text()
    assert report.returncode == 0 and "not timed" not in page and "**commit** ?" not in page
    # and the JSON's benchmarks read as records: compared with the run's own directory
    same = subprocess.run([sys.executable, "-m", "modelopt", "compare", str(out), str(saved)],
                          cwd=ROOT, capture_output=True, text=True)
    assert same.returncode == 0, same.stdout + same.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_ends_the_session_and_leaves_no_process(tmp_path, sig):
    mark, out = uuid.uuid4().hex, tmp_path / "o"
    proc = pytest_run(tmp_path, 40_000, mark, "--results-out", str(out), "--suite",
                      str(tmp_path / "s.yaml"))
    end = time.monotonic() + 120
    while not cell_running(mark) and time.monotonic() < end:
        time.sleep(0.2)
    assert cell_running(mark), "no cell process started"
    time.sleep(1)
    proc.send_signal(sig)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, text  # pytest's exit status for an interrupted session
    assert "KeyboardInterrupt" in text and "IndexError" not in text
    assert "1 passed" not in text  # the session stopped; later cells did not start
    deadline = time.monotonic() + 10
    while leftovers(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [" ".join(p.cmdline())[:200] for p in leftovers(mark)] == []


def test_an_invalid_suite_is_a_usage_error_naming_the_key(tmp_path):
    """Refused before collection: pytest's usage error (exit 4) with the key, no traceback."""
    (tmp_path / "bad.yaml").write_text("name: bad\ndefaults: {dataset: mnist1d, model: mlpp}\n")
    r = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/", "--benchmark-only", "-q",
                        "--suite", str(tmp_path / "bad.yaml")], cwd=ROOT, capture_output=True,
                       text=True)
    text = r.stdout + r.stderr
    assert r.returncode == 4, text
    assert "defaults.model: unknown model 'mlpp'" in text and "Traceback" not in text
    # results of another suite where this one's would go: said once, not a test's traceback
    (tmp_path / "s.yaml").write_text(SUITE.replace("STEPS", "5"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "suite.json").write_text(json.dumps({"suite": "other", "content_hash": "x"}))
    r = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/", "--benchmark-only", "-q",
                        "--suite", str(tmp_path / "s.yaml"), "--results-out", str(other)],
                       cwd=ROOT, capture_output=True, text=True)
    text = r.stdout + r.stderr
    assert r.returncode == 4 and "holds results of suite 'other'" in text, text
    assert text.count("holds results of suite") == 1 and "Traceback" not in text


def test_a_diverged_cell_is_a_finding_as_modelopt_run_counts_it(tmp_path):
    """`modelopt run` exits 0 when every cell is ok or diverged (a setting that diverges is
    a result); the front door failed the same suite, so CI and a laptop disagreed."""
    (tmp_path / "s.yaml").write_text(SUITE.replace("STEPS", "20").replace("[0, 1, 2]", "[0]")
                                     + "matrix:\n  optimizer: [{name: sgd, lr: 0.01}, "
                                       "{name: sgd, lr: 1.0e+12}]\n")
    out = tmp_path / "o"
    run = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/", "--benchmark-only",
                          "-q", "--suite", str(tmp_path / "s.yaml"), "--results-out", str(out),
                          "--benchmark-json", str(tmp_path / "b.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"1 passed, 1 skipped", run.stdout)
    statuses = sorted(json.loads(x)["status"] for x in
                      (out / "results.jsonl").read_text().splitlines())
    assert statuses == ["diverged", "ok"]
    # the JSON keeps the cell it did not benchmark: compare pairs it with the run's record
    # (it was "only in the baseline", failing the gate when the cell was fixed)
    from modelopt.results import compare

    cmp = compare.compare(out, tmp_path / "b.json", timer=None)
    assert cmp.common == 2 and not cmp.only_baseline and not cmp.failed
    assert cmp.data == ""  # the JSON keeps what each cell read, as the records do
    # and each cell's config: named by its axes, whichever side the JSON is
    back = compare.compare(tmp_path / "b.json", out, timer=None)
    assert sorted(back.labels.values()) == ["optimizer=sgd(lr=0.01)",
                                            "optimizer=sgd(lr=1e+12)"], back.labels
    doc = json.loads((tmp_path / "b.json").read_text())
    assert [u["status"] for u in doc["modelopt"]["untimed"]] == ["diverged"]
    doc["modelopt"]["untimed"][0]["status"] = "fine"  # read as a results.jsonl line is
    (tmp_path / "f.json").write_text(json.dumps(doc))
    with pytest.raises(compare.CompareError, match="untimed cell 0 is not a result record"):
        compare.compare(out, tmp_path / "f.json", timer=None)
    doc["modelopt"]["untimed"][0]["status"] = "ok"  # it hid the benchmarked cell
    (tmp_path / "f.json").write_text(json.dumps(doc))
    with pytest.raises(compare.CompareError, match="untimed cell 0 says ok"):
        compare.compare(out, tmp_path / "f.json", timer=None)
    doc["modelopt"]["untimed"] = []
    doc["benchmarks"] *= 2  # the later one won, unsaid
    (tmp_path / "f.json").write_text(json.dumps(doc))
    with pytest.raises(compare.CompareError, match="seed 0 appears twice"):
        compare.compare(out, tmp_path / "f.json", timer=None)
    # the suite edited, the same folder: its earlier records stay (pytest reruns the cells),
    # and the session says so rather than a report mixing two versions unsaid
    (tmp_path / "s.yaml").write_text(SUITE.replace("STEPS", "21").replace("[0, 1, 2]", "[0]"))
    again = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/", "--benchmark-only",
                            "-q", f"--suite={tmp_path / 's.yaml'}", "--results-out", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    text = again.stdout + again.stderr
    assert again.returncode == 0, text
    assert "holds results of suite 'door' with a different content" in text, text
    assert "Its earlier records stay beside this run's" in text


def test_a_failed_cell_fails_its_test_without_the_unused_fixture_warning(tmp_path):
    """pytest-benchmark warned "Benchmark fixture was not used at all" beside each failed
    cell's failure: a cell that failed was never to be timed, and its error says why."""
    (tmp_path / "s.yaml").write_text(
        SUITE.replace("STEPS", "5").replace("[0, 1, 2]", "[0]")
        + "matrix:\n  model: [linear, {name: test_crash, how: raise}]\n")
    run = subprocess.run([sys.executable, "-m", "pytest", "benchmarks/", "--benchmark-only",
                          "-q", "--suite", str(tmp_path / "s.yaml"), "--results-out",
                          str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    text = run.stdout + run.stderr
    assert run.returncode == 1 and re.search(r"1 failed, 1 passed", text), text
    assert "failed: RuntimeError: deliberate failure in forward" in text, text
    assert "not used at all" not in text, text
