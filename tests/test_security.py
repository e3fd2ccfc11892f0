"""Untrusted input: a results directory from elsewhere runs no code, writes nothing outside
where it is told, and bad files or bad figures are clear errors; a run is one writer, and
nothing is lost on a full disk. Each test is one row of the trial in the issue, retried."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from modelopt.results import store
from modelopt.run import merge, runner
from modelopt.spec.suite import SuiteError, parse

SUITE = """
name: sec
seeds: [0]
defaults:
  dataset: {name: synthetic, n_samples: 300, n_features: 8, n_classes: 3}
  model: {name: mlp, hidden: 16}
  optimizer: {name: adam, lr: 0.01}
  train: {steps: 20, batch_size: 32, eval_every: 10}
matrix:
  prune: [none, {name: l1_unstructured, amount: 0.5}]
"""


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "modelopt", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def main(capsys, *args):
    """The command in this process (no interpreter start-up): (exit code, stdout, stderr).
    An uncaught exception, the traceback a user would see, fails the test."""
    from modelopt.cli import main as modelopt

    capsys.readouterr()
    code = modelopt([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sec") / "run"
    assert not runner.run(parse(SUITE), out, jobs=2).failed
    return out


def copy_of(run_dir, tmp_path, name="copy"):
    dest = tmp_path / name
    shutil.copytree(run_dir, dest)
    return dest


class Payload:
    """What an attacker pickles: unpickling it would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_payload_in_a_saved_model_is_never_run(run_dir, tmp_path):
    marker = tmp_path / "PWNED"
    evil = copy_of(run_dir, tmp_path)
    victim = sorted((evil / "models").glob("*-model.pt"))[0]
    torch.save({"model": Payload(marker), "example": torch.zeros(1, 8)}, victim)
    r = cli("time", evil, "--force")  # without --force it keeps timing.json (tested below)
    assert not marker.exists()
    assert "not timed" in r.stderr and "can run code" in r.stderr
    assert r.returncode == 0  # the other model was rebuilt and timed
    r = cli("compare", run_dir, evil)
    assert not marker.exists()
    assert "not re-timed" in r.stdout and "can run code" in r.stdout


def test_a_model_file_that_would_unpack_to_gigabytes_is_not_loaded(run_dir, tmp_path):
    """torch.load reads deflated zip entries: 1.5 MB of zeros re-zipped unpacked to 2.4 GB
    in the timing process. torch.save stores its entries as they are; anything else is
    refused before loading."""
    import zipfile

    evil = copy_of(run_dir, tmp_path)
    victim = sorted((evil / "models").glob("*-model.pt"))[0]
    with zipfile.ZipFile(victim) as old:
        entries = [(i.filename, old.read(i)) for i in old.infolist()]
    with zipfile.ZipFile(victim, "w", zipfile.ZIP_DEFLATED) as new:
        for name, data in entries:
            new.writestr(name, data)
    r = cli("time", evil, "--force")
    assert r.returncode == 0 and "not timed" in r.stderr, r.stderr  # the others are
    assert "entries are compressed, which torch.save never does" in r.stderr, r.stderr


@pytest.mark.parametrize("command", ["report", "time", "export"])
@pytest.mark.parametrize("planted", ["fifo", "folder"])
def test_a_fifo_or_a_folder_in_place_of_a_results_file_is_refused_not_waited_on(
        run_dir, tmp_path, command, planted):
    """A FIFO named results.jsonl blocked every command for ever; a folder was a traceback."""
    evil = copy_of(run_dir, tmp_path)
    (evil / "results.jsonl").unlink()
    os.mkfifo(evil / "results.jsonl") if planted == "fifo" else (evil / "results.jsonl").mkdir()
    out = ["--out", tmp_path / "o"] if command != "time" else []
    r = subprocess.run([sys.executable, "-m", "modelopt", command, str(evil), *map(str, out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    what = "a FIFO or device" if planted == "fifo" else "a folder"
    assert f"results.jsonl is {what}, not a file" in r.stderr and "Traceback" not in r.stderr


def test_code_named_in_a_results_directory_is_not_imported(run_dir, tmp_path):
    marker = tmp_path / "IMPORTED"
    evil = copy_of(run_dir, tmp_path)
    (evil / "evil_mod.py").write_text(f"open({str(marker)!r}, 'w')\n"
                                      "def net(input_shape, num_outputs, /):\n    pass\n")
    lines = [json.loads(x) for x in (evil / "results.jsonl").read_text().splitlines()]
    for rec in lines:
        rec["cell"]["model"] = {"name": "evil_mod:net"}
        rec["cell"]["plugins"] = {"modules": ["evil_mod"], "path": [str(evil)]}
    (evil / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for cwd in (None, evil):  # nor from the working directory
        r = cli("time", evil, cwd=cwd)
        assert not marker.exists(), r.stderr
        assert r.returncode == 1 and "never imported from there" in r.stderr
        assert "--plugins evil_mod" not in r.stderr  # no advice to trust what the file named
    # nor from a module the user trusts: the file would choose the function and its
    # arguments (trust is per factory the user's suite names, not per module)
    for rec in lines:
        rec["cell"]["model"] = {"name": "subprocess:getoutput", "cmd": f"touch {marker}"}
        rec["cell"].pop("plugins")
    (evil / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    r = cli("time", evil, "--plugins", "subprocess")
    assert not marker.exists() and r.returncode == 1, r.stderr
    assert "never imported from there" in r.stderr


def test_a_module_planted_in_the_working_directory_is_not_imported(run_dir, tmp_path):
    """`python -m modelopt` put the working directory first on sys.path: run inside a
    received results directory, its `tabulate.py` ran in place of the library."""
    evil = copy_of(run_dir, tmp_path)
    for name in ("tabulate", "pydantic", "yaml", "pandas"):
        (evil / f"{name}.py").write_text(f"open({str(tmp_path / name)!r}, 'w')\n")
    r = subprocess.run([sys.executable, "-m", "modelopt", "report", ".", "--out", "r"],
                       capture_output=True, text=True, cwd=evil,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
                       | {"MODELOPT_PLUGINS": ""})
    assert r.returncode == 0, r.stderr
    assert not [p.name for p in tmp_path.iterdir() if p.name != "copy"]


def test_a_suite_name_from_a_results_file_cannot_write_outside_out(run_dir, tmp_path):
    evil = copy_of(run_dir, tmp_path)
    lines = [json.loads(x) for x in (evil / "results.jsonl").read_text().splitlines()]
    lines[0]["suite"] = "../../../../" + str(tmp_path).lstrip("/") + "/ESCAPED"
    (evil / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    r = cli("report", evil, "--out", tmp_path / "reports")
    assert r.returncode == 2 and "results.jsonl:1" in r.stderr and "suite" in r.stderr
    assert not list(tmp_path.glob("ESCAPED*"))


def test_dot_dot_as_a_suite_name_is_refused():
    with pytest.raises(SuiteError, match="name"):
        parse(SUITE.replace("name: sec", "name: .."))


def test_a_huge_matrix_is_refused_at_load_without_building_it():
    axes = "\n".join(f"  optimizer.x{i}: [{', '.join(str(v) for v in range(10))}]"
                     for i in range(10))
    text = SUITE.split("matrix:")[0] + "matrix:\n" + axes + "\n"
    with pytest.raises(SuiteError, match=r"10,000,000,000 cells .*max_cells 10,000"):
        parse(text)
    # the limit is the suite's to raise
    small = SUITE + "max_cells: 1\n"
    with pytest.raises(SuiteError, match="plans 2 cells"):
        parse(small)


def test_a_second_run_into_the_same_directory_refuses(tmp_path, tiny_suite_file):
    out = tmp_path / "o"
    with runner.writer_lock(out):
        r = cli("run", tiny_suite_file, "--out", out, "-q")
        assert r.returncode == 2 and f"pid {os.getpid()}" in r.stderr
        assert not (out / "results.jsonl").exists()  # nothing ran
    # a lock left by a process that died is the kernel's to release: taken over
    (out / runner.LOCK_FILE).write_text("pid 999999 on elsewhere")
    with runner.writer_lock(out):
        assert str(os.getpid()) in (out / runner.LOCK_FILE).read_text()


def test_a_link_planted_in_a_results_directory_sends_no_write_or_copy_elsewhere(
        run_dir, tmp_path, tiny_suite_file, capsys):
    """A run and `time` write into the directory (lock, results, timing.json, dense/) and
    merge copies from it: a symbolic link in it would reach a file of the user's."""
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    for planted in (runner.LOCK_FILE, "results.jsonl", "models/x.pt"):
        evil = copy_of(run_dir, tmp_path, f"evil-{planted.replace('/', '-')}")
        (evil / planted).unlink(missing_ok=True)
        (evil / planted).symlink_to(victim)
        for args in (("time", evil), ("run", tiny_suite_file, "--out", evil, "-q"),
                     ("merge", evil, "--out", tmp_path / f"m-{evil.name}")):
            if args[0] == "run":  # its own process: it handles signals
                r = cli(*args)
                code, err = r.returncode, r.stderr
            else:
                code, _, err = main(capsys, *args)
            assert code == 2 and victim.read_text() == "mine", (args, err)
            # refused as a link (time may refuse a linked results.jsonl on reading it)
            assert "a symbolic link" in err or args[0] == "time", (args, err)
        assert not (tmp_path / f"m-{evil.name}").exists()
    # merge's --out is new or empty: a link planted there would take its suite.json
    into = tmp_path / "into"
    into.mkdir()
    (into / "suite.json").symlink_to(victim)
    code, _, err = main(capsys, "merge", run_dir, "--out", into)
    assert code == 2 and "is not empty" in err and victim.read_text() == "mine", err
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for not_a_dir in (victim, tmp_path / "dangling"):  # was a FileExistsError traceback
        code, _, err = main(capsys, "merge", run_dir, "--out", not_a_dir)
        assert code == 2 and "is not a directory" in err and victim.read_text() == "mine", err
    # a link planted after the check is refused where the file is opened
    out = tmp_path / "late"
    out.mkdir()
    (out / "results.jsonl").symlink_to(victim)
    with pytest.raises(store.ResultsError, match="a symbolic link"):
        store.append(out, store.read(run_dir)[0])
    assert victim.read_text() == "mine"
    # a linked models/ folder: compare re-timed another folder's models as this run's
    elsewhere = copy_of(run_dir, tmp_path, "models-link")
    shutil.move(elsewhere / "models", tmp_path / "their-models")
    (elsewhere / "models").symlink_to(tmp_path / "their-models")
    code, out, err = main(capsys, "compare", run_dir, elsewhere)
    assert code == 2 and "models: a symbolic link" in err, (out, err)


def with_metric(run_dir, tmp_path, value):
    cur = copy_of(run_dir, tmp_path, "cur")
    text = (cur / "results.jsonl").read_text().splitlines()
    rec = json.loads(text[0])
    rec["metrics"]["accuracy"] = value
    text[0] = json.dumps(rec)  # NaN is written as JSON's NaN literal
    (cur / "results.jsonl").write_text("\n".join(text) + "\n")
    return cur, rec["cell_id"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "high", True])
def test_a_figure_that_is_not_a_finite_number_fails_the_gate(run_dir, tmp_path, value, capsys):
    cur, cid = with_metric(run_dir, tmp_path, value)
    for args in ((run_dir, cur), (cur, run_dir)):  # either side
        code, _, err = main(capsys, "compare", *args, "--no-retime")
        assert code == 2 and "accuracy" in err and "results.jsonl:1" in err


def test_a_figure_the_head_lost_is_a_regression(run_dir, tmp_path, capsys):
    cur = copy_of(run_dir, tmp_path, "cur")
    lines = [json.loads(x) for x in (cur / "results.jsonl").read_text().splitlines()]
    for rec in lines:
        del rec["metrics"]["accuracy"]
    (cur / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    code, out, _ = main(capsys, "compare", run_dir, cur, "--no-retime")
    assert code == 1 and "accuracy (absent in the current run" in out


def test_plan_and_run_on_a_broken_results_directory_say_so(run_dir, tmp_path, tiny_suite_file,
                                                           capsys):
    bad = copy_of(run_dir, tmp_path)
    (bad / "suite.json").write_text("[1, 2]")
    code, _, err = main(capsys, "plan", tiny_suite_file, "--out", bad)
    assert code == 2 and "suite.json:1" in err
    r = cli("run", tiny_suite_file, "--out", bad, "-q")  # its own process: it handles signals
    assert r.returncode == 2 and "suite.json:1" in r.stderr and "Traceback" not in r.stderr
    other = copy_of(run_dir, tmp_path, "other")
    code, out, _ = main(capsys, "plan", tiny_suite_file, "--out", other)
    assert code == 0 and "`run` will refuse" in out


def test_a_full_disk_stops_the_run_with_a_clear_error(run_dir, tmp_path):
    import resource

    full = copy_of(run_dir, tmp_path)
    (tmp_path / "sec.yaml").write_text(SUITE)
    size = (full / "results.jsonl").stat().st_size

    def limit():  # the file size limit makes writes short, as a full disk does
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 2000, size + 2000))

    r = subprocess.run([sys.executable, "-m", "modelopt", "run", str(tmp_path / "sec.yaml"),
                        "--out", str(full), "--no-resume", "-q", "--jobs", "1"],
                       capture_output=True, text=True, preexec_fn=limit)
    assert r.returncode == 2 and "could not append a whole record" in r.stderr
    assert "Traceback" not in r.stderr
    assert all(json.loads(x) for x in (full / "results.jsonl").read_text().splitlines())
    assert not list(full.rglob("*.tmp"))


def test_nothing_in_common_fails_even_with_allow_missing(run_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "results.jsonl").write_text("")
    r = cli("compare", empty, run_dir, "--allow-missing", "--no-retime")
    assert r.returncode == 1 and "no cell in common" in r.stderr


@pytest.mark.parametrize("command", ["report", "compare", "export", "merge", "time"])
@pytest.mark.parametrize("broken", ["suite.json", "timing.json", "record"])
def test_malformed_files_are_exit_2_with_file_and_line(run_dir, tmp_path, command, broken,
                                                       capsys):
    bad = copy_of(run_dir, tmp_path)
    if broken == "record":
        lines = (bad / "results.jsonl").read_text().splitlines()
        rec = json.loads(lines[1])
        rec["suite"] = None
        lines[1] = json.dumps(rec)
        (bad / "results.jsonl").write_text("\n".join(lines) + "\n")
        where = "results.jsonl:2"
    else:
        (bad / broken).write_text('{"suite": "sec",\n "rows": [oops')
        where = f"{broken}:2"
    args = {"report": ("report", bad, "--out", tmp_path / "r"),
            "compare": ("compare", run_dir, bad), "export": ("export", bad, "--out", tmp_path / "e"),
            "merge": ("merge", bad, "--out", tmp_path / "m"), "time": ("time", bad)}[command]
    if command in ("merge", "compare", "time") and broken == "timing.json":
        return  # they do not read another run's timing (they time anew)
    code, out, err = main(capsys, *args)
    assert code == 2, (out, err)
    assert where in err


@pytest.mark.parametrize("command", ["report", "export", "time", "compare"])
def test_a_suite_file_given_for_results_is_said_to_be_no_results_file(tmp_path, command, capsys):
    """`modelopt export suites/bench.yaml` read `suites/bench.yaml:1: malformed result line
    (Expecting value: ...)`."""
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE)
    args = {"report": (suite, "--out", tmp_path / "r"), "export": (suite, "--out", tmp_path / "e"),
            "time": (suite,), "compare": (suite, suite)}[command]
    code, _, err = main(capsys, command, *args)
    assert code == 2 and f"{suite}: not a results file; give a results directory" in err, err


HOSTILE = {  # what a record from elsewhere may hold, and where the error points
    "accuracy of 400 digits": (lambda r: r["metrics"].update(accuracy=10 ** 400), "accuracy"),
    "accuracy below nothing": (lambda r: r["metrics"].update(accuracy=-5), "a share is between"),
    "a model that is a number": (lambda r: r["cell"].update(model=5), "cell.model"),
    "two models in one cell": (lambda r: r["cell"].update(model=[{"name": "mlp"}] * 2),
                               "cell.model"),
    "a cpu that is a number": (lambda r: r["env"].update(cpu=5), "env.cpu"),
    "a curve step that is a word": (lambda r: r["curves"].append({"step": "x"}), "step"),
    "a group without an id": (lambda r: r.update(group={"kind": "tune"}), "group"),
    "a seed that is a word": (lambda r: r.update(seed="1"), "seed"),
}


@pytest.mark.parametrize("hostile", sorted(HOSTILE))
def test_hostile_records_are_exit_2_naming_the_line_never_a_traceback(run_dir, tmp_path,
                                                                       capsys, hostile):
    bad = copy_of(run_dir, tmp_path)
    lines = (bad / "results.jsonl").read_text().splitlines()
    rec = json.loads(lines[1])
    change, said = HOSTILE[hostile]
    change(rec)
    lines[1] = json.dumps(rec)
    (bad / "results.jsonl").write_text("\n".join(lines) + "\n")
    for args in (("report", bad, "--out", tmp_path / "r"), ("compare", run_dir, bad,
                                                             "--no-retime")):
        code, out, err = main(capsys, *args)
        assert code == 2 and "results.jsonl:2" in err and said in err, (args, err)


def test_a_suite_is_read_from_one_directory(run_dir, tmp_path, capsys):
    """Two runs of one suite (a rerun, unmerged shards): their seeds would count twice and
    their latencies come from separate timing stages; report and export refuse, and say
    what joins them."""
    again = copy_of(run_dir, tmp_path)
    for args in (("report", run_dir, again, "--out", tmp_path / "r"),
                 ("export", run_dir, again, "--out", tmp_path / "e")):
        code, _, err = main(capsys, *args)
        assert code == 2 and "suite 'sec' is also in" in err and "modelopt merge" in err, err
    code, _, err = main(capsys, "report", run_dir, f"{run_dir}/", "--out", tmp_path / "r")
    assert code == 2 and "given twice" in err and "merge" not in err, err


@pytest.mark.parametrize("field,value", [
    ("side", "evil"), ("cell_id", "../../etc/x"),
    ("ms_batch1", 1e308), ("rounds_batch1", [1e-308]),  # their ratio: a traceback in stdev
    ("ms_generate", 1.0),  # before its first token: -4 ms per new token on the page
])
def test_a_timing_row_names_only_what_a_run_can_time(run_dir, tmp_path, capsys, field, value):
    bad = copy_of(run_dir, tmp_path)
    doc = json.loads((bad / "timing.json").read_text())
    doc["rows"][0].update({"ms_first_token": 5.0, "new_tokens": 8} if field == "ms_generate"
                          else {})
    doc["rows"][0][field] = value
    (bad / "timing.json").write_text(json.dumps(doc))
    code, _, err = main(capsys, "report", bad, "--out", tmp_path / "r")
    assert code == 2 and "timing.json" in err and field in err, err


def test_a_line_nested_past_any_reader_or_a_format_past_any_page_is_refused(run_dir, tmp_path,
                                                                             capsys):
    bad = copy_of(run_dir, tmp_path)
    with open(bad / "results.jsonl", "a") as f:
        f.write("[" * 100_000 + "\n")
    code, _, err = main(capsys, "report", bad, "--out", tmp_path / "r")
    assert code == 2 and "results.jsonl:" in err and "malformed" in err
    bad = copy_of(run_dir, tmp_path, "fmt")
    meta = json.loads((bad / "suite.json").read_text())
    meta["metrics"] = [{"name": "evil", "title": "Evil", "fmt": "f99999999"}]
    (bad / "suite.json").write_text(json.dumps(meta))
    code, _, err = main(capsys, "report", bad, "--out", tmp_path / "r2")
    assert code == 2 and "suite.json" in err and "format 'f99999999'" in err
    assert not (tmp_path / "r2").exists() or sum(
        f.stat().st_size for f in (tmp_path / "r2").rglob("*")) < 10_000_000


def test_a_timed_model_whose_cell_failed_since_is_named_so_when_time_keeps_timing_json(
        run_dir, tmp_path):
    bad = copy_of(run_dir, tmp_path)
    rec = json.loads((bad / "results.jsonl").read_text().splitlines()[0])
    rec.update(status="failed", error="a rerun that failed")
    with open(bad / "results.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")  # its latest record: not ok
    r = cli("time", bad)
    assert r.returncode == 1 and "no ok record now" in r.stderr, r.stderr
    assert "--suite" not in r.stderr and "--force to drop their latency" in r.stderr


def test_a_folder_named_as_a_saved_model_is_not_one(run_dir, tmp_path, capsys):
    bad = copy_of(run_dir, tmp_path)
    model = next((bad / "models").glob("*-model.pt"))
    model.unlink()
    model.mkdir()  # a folder where the model file was
    code, _, err = main(capsys, "merge", bad, "--out", tmp_path / "m")
    assert code == 0, err
    assert not (tmp_path / "m" / "models" / model.name).exists()


def test_export_of_an_empty_results_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "results.jsonl").write_text("")
    code, _, err = main(capsys, "export", tmp_path, "--out", tmp_path / "e")
    assert code == 2 and "no results" in err


def test_a_full_disk_leaves_no_partial_record_and_says_so(run_dir, tmp_path):
    """The file size limit (ulimit -f) makes the write short, as a full disk does."""
    target = tmp_path / "r"
    target.mkdir()
    shutil.copy(run_dir / "results.jsonl", target / "results.jsonl")
    before = (target / "results.jsonl").read_bytes()
    code = textwrap.dedent(f"""
        import resource, signal
        from modelopt.results import store
        rec = store.read({str(run_dir)!r})[0]
        rec.extra["padding"] = "x" * 100_000
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({len(before) + 4096}, {len(before) + 4096}))
        try:
            store.append({str(target)!r}, rec)
        except store.ResultsError as exc:
            print("ERROR", exc)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "ERROR" in r.stdout and "could not append a whole record" in r.stdout, r.stderr
    assert (target / "results.jsonl").read_bytes() == before
    assert len(store.read(target)) == len(store.read(run_dir))


def test_no_resume_into_another_suites_directory_is_refused(run_dir, tmp_path, tiny_suite_file):
    other = copy_of(run_dir, tmp_path)
    for flag in ("--no-resume", "--force"):  # two suites never share a results directory
        r = cli("run", tiny_suite_file, "--out", other, flag, "-q")
        assert r.returncode == 2 and "a results directory holds one suite" in r.stderr, r.stderr
    assert {r.suite for r in store.read(other)} == {"sec"}


def test_steps_and_epochs_together_are_refused():
    with pytest.raises(SuiteError, match="steps or epochs, not both") as refused:
        parse(SUITE.replace("train: {steps: 20,", "train: {steps: 20, epochs: 2,"))
    assert "Value error" not in str(refused.value)  # pydantic's prefix: our words alone


def test_the_docs_annotated_suite_loads():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "reference" / "suite-file.md").read_text()
    block = text
    block = block[block.index("```yaml") + 7:]
    suite = parse(block[:block.index("```")])
    assert len(suite.cells) == 8 and suite.spec.thresholds == {"accuracy": "0.5"}


def test_unused_exclude_and_include_entries_warn():
    text = SUITE + ("exclude:\n  - {prune: {name: random_unstructured}}\n"
                    "include:\n  - {prune: none}\n")
    warnings = parse(text).warnings
    assert any("exclude[0] matches no matrix combination" in w for w in warnings)
    assert any("include[0] changes nothing" in w for w in warnings)


def test_a_training_speed_shared_by_cells_or_measured_too_briefly_is_not_gated(run_dir, tmp_path):
    """The unchanged rerun's trial: a 1-step training's throughput moved 40 %; counted once,
    and below the minimum of measured work, reported but not gated."""
    from modelopt.results import compare

    cur = copy_of(run_dir, tmp_path, "cur")
    lines = [json.loads(x) for x in (cur / "results.jsonl").read_text().splitlines()]
    assert len({rec["extra"]["train_key"] for rec in lines}) == 1  # the two cells share it
    for rec in lines:
        rec["metrics"]["train_samples_s"] *= 1.4
    (cur / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    cmp = compare.compare(run_dir, cur)
    speed = [r for r in cmp.rows if r.metric == "train_samples_s"]
    assert len(speed) == 1 and speed[0].verdict == "not gated" and "not gated" in speed[0].note
    assert "× machine_probe_ms" in speed[0].note  # the figures shown are the products
    # the same change over enough measured work is judged
    for rec in lines:
        rec["metrics"]["train_seconds"] = 5.0
    (cur / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    base = copy_of(cur, tmp_path, "base")
    for rec in lines:
        rec["metrics"]["train_samples_s"] *= 0.5
    (cur / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    speed = [r for r in compare.compare(base, cur).rows if r.metric == "train_samples_s"]
    assert len(speed) == 1 and speed[0].note == "× machine_probe_ms: per machine speed"


def test_a_model_that_cannot_be_rebuilt_is_timed_by_its_own_run_only(tmp_path):
    """Its offset is drawn at build and not saved: the run's own stage times its own copy and
    marks it not re-timeable; `time` and `compare` later say so instead of timing it."""
    text = SUITE.replace("seeds: [0]", "seeds: [1]").replace(
        "model: {name: mlp, hidden: 16}", "model: test_unrebuildable")
    out = tmp_path / "run"
    assert not runner.run(parse(text), out, jobs=2).failed
    doc = json.loads((out / "timing.json").read_text())
    assert {r["kind"] for r in doc["rows"]} == {"model"} and 3 <= doc["processes"] <= 5
    assert len(doc["rows"]) == 2 * doc["processes"]  # both cells, in every process
    assert len(doc["not_retimeable"]) == 2
    assert all("outputs differ" in why for why in doc["not_retimeable"].values())
    assert not list(out.rglob("*.tmp")) and "modelopt-own-" not in str(list(out.rglob("*")))
    r = cli("time", out)
    assert r.returncode == 1 and "outputs differ" in r.stderr and "kept as it was" in r.stderr
    assert json.loads((out / "timing.json").read_text())["rows"] == doc["rows"]
    r = cli("compare", out, out)
    assert r.returncode == 0 and "not re-timed" in r.stdout


def edit_record(bad, change, line=1):
    lines = (bad / "results.jsonl").read_text().splitlines()
    rec = json.loads(lines[line])
    change(rec)
    lines[line] = json.dumps(rec)
    (bad / "results.jsonl").write_text("\n".join(lines) + "\n")


def edit_json(path, change):
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def test_strings_from_a_results_directory_are_text_on_the_page_and_the_terminal(
        run_dir, tmp_path, capsys):
    """A record's CPU name or cell name carried a heading, a remote image, an HTML comment
    (which hides the rest of a PR comment), a table's `|` and terminal escape sequences onto
    the user's page, compare's comment and stdout; `$...$` in a label raised in matplotlib."""
    bad = copy_of(run_dir, tmp_path)
    hostile = "EPYC\x1b]52;c;ZWNobw==\x07\n# FAKE ![p](https://evil.example/p.png) <!-- `x"

    def change(rec):
        rec["env"]["cpu"] = hostile
        rec["cell"]["model"]["name"] = "ml|p$\\frac{$"
    edit_record(bad, change)
    code, _, err = main(capsys, "report", bad, "--out", tmp_path / "r")
    assert code == 0, err
    page = (tmp_path / "r" / "sec.md").read_text()
    code, out, _ = main(capsys, "compare", run_dir, bad, "--no-retime")
    for text in (page, out):
        assert "\x1b" not in text and "](https" not in text and "<!--" not in text
        assert "# FAKE" not in text.splitlines() and "\n# FAKE" not in text
    assert "EPYC" in page and "ml¦p" in page and "ml|p" not in page


def test_a_timing_or_suite_json_of_another_suite_does_not_stand_in_for_its_own(
        run_dir, tmp_path, capsys):
    """A directory whose timing.json named the user's other suite replaced that suite's
    speed-ups on the page of `report theirs mine`."""
    for name in ("timing.json", "suite.json"):
        bad = copy_of(run_dir, tmp_path, name)
        edit_json(bad / name, lambda doc: doc.update(suite="other"))
        code, _, err = main(capsys, "report", bad, "--out", tmp_path / "r")
        assert code == 2 and f"{name}: of suite 'other'" in err, err


@pytest.mark.parametrize("change,said", [
    (lambda d: d["rows"][0].update(ms_batch1=0.0), "greater than or equal to 0.000001"),
    (lambda d: d["rows"][0].update(rounds_batch=[-1.0] * 8), "greater than or equal to 0.000001")])
def test_a_latency_of_zero_or_less_is_refused(run_dir, tmp_path, capsys, change, said):
    bad = copy_of(run_dir, tmp_path)
    edit_json(bad / "timing.json", change)
    code, _, err = main(capsys, "report", bad, "--out", tmp_path / "r")
    assert code == 2 and "timing.json" in err and said in err, err


@pytest.mark.parametrize("key,value", [("labels", ["x"]), ("cells", 5), ("seeds", [1, "a"]),
                                       ("inputs", {"abc": "x"}), ("seeds", list(range(5000)))])
def test_a_suite_json_identity_is_read_never_trusted(run_dir, tmp_path, capsys, key, value):
    """Its cells, seeds, inputs and labels raised tracebacks in report, merge and plan, and
    10,000 cells x 10,000 seeds filled memory."""
    bad = copy_of(run_dir, tmp_path)
    edit_json(bad / "suite.json", lambda doc: doc.update({key: value}))
    for args in (("report", bad, "--out", tmp_path / "r"), ("merge", bad, "--out", tmp_path / "m")):
        code, _, err = main(capsys, *args)
        assert code == 2 and "suite.json" in err and key in err, (args, err)
    assert not (tmp_path / "m").exists()


def test_a_metric_declaration_is_checked_field_by_field(run_dir, tmp_path, capsys):
    bad = copy_of(run_dir, tmp_path)
    edit_json(bad / "suite.json", lambda doc: doc.update(metrics=[{
        "name": "myfig", "title": "My", "kind": "relative", "tolerance": "x"}]))
    code, _, err = main(capsys, "compare", bad, bad, "--no-retime")
    assert code == 2 and "tolerance 'x'" in err, err
    doc = {"benchmarks": [], "modelopt": [1]}
    (tmp_path / "b.json").write_text(json.dumps(doc))
    code, _, err = main(capsys, "compare", tmp_path / "b.json", run_dir, "--no-retime")
    assert code == 2 and "modelopt block" in err, err


def test_a_saved_model_that_expands_to_gigabytes_or_links_out_is_not_loaded(run_dir, tmp_path,
                                                                           capsys):
    from modelopt.run import rebuild

    bad = copy_of(run_dir, tmp_path)
    saved = sorted((bad / "models").glob("*-model.pt"))[0]
    doc = torch.load(saved, weights_only=True)
    name = next(iter(doc["state"]))
    doc["state"][name] = torch.zeros(1).expand(*doc["state"][name].shape)
    torch.save(doc, saved)
    with pytest.raises(rebuild.NotRebuildable, match="expanded strides"):
        rebuild.read(saved)
    victim = tmp_path / "victim.pt"
    victim.write_bytes(b"secret")
    saved.unlink()
    saved.symlink_to(victim)
    code, out, err = main(capsys, "compare", run_dir, bad)
    assert code == 2 and "a symbolic link" in err and "secret" not in out, err
    (bad / "results.jsonl").unlink()
    (bad / "results.jsonl").symlink_to(run_dir / "results.jsonl")
    code, _, err = main(capsys, "report", bad, "--out", tmp_path / "r")
    assert code == 2 and "a symbolic link" in err, err


@pytest.mark.parametrize("change", [
    lambda r: r["cell"].update(distill={"name": "kd", "teacher": 5}),
    lambda r: r.update(task="regression"),
    lambda r: r.update(cell=None), lambda r: r["cell"].pop("dataset"),
    lambda r: r.update(group={"kind": "tune", "id": "x"}),
    lambda r: r.update(curves=[{"step": 1, "val_score": "x"}])])
def test_a_record_of_a_shape_no_run_writes_is_refused_by_report_and_export(
        run_dir, tmp_path, capsys, change):
    bad = copy_of(run_dir, tmp_path)
    edit_record(bad, change)
    code, _, err = main(capsys, "report", bad, "--out", tmp_path / "r")
    assert code == 2 and str(bad) in err, err
    # export reads less of a record: it refuses what it reads, or exports (no traceback:
    # `main` would raise it here)
    code, _, err = main(capsys, "export", bad, "--out", tmp_path / "e")
    assert code == 0 or (code == 2 and str(bad) in err), err


def test_a_reader_that_fails_on_results_as_modelopt_wrote_them_says_the_bug_is_ours(
        run_dir, tmp_path, capsys, monkeypatch):
    """A report that breaks on results no one changed is modelopt's bug, raised with its
    traceback; where a line was changed since modelopt wrote it, that line is named, exit 2."""
    from modelopt.cli import main as modelopt
    from modelopt.results import report

    def broken(df):
        raise KeyError("a column report code expects")

    monkeypatch.setattr(report, "aggregate", broken)
    clean, edited = copy_of(run_dir, tmp_path, "clean"), copy_of(run_dir, tmp_path, "edited")
    with pytest.raises(KeyError, match="a column report code expects"):
        modelopt(["report", str(clean), "--out", str(tmp_path / "r")])
    assert "a bug in modelopt" in capsys.readouterr().err
    edit_record(edited, lambda r: r["env"].update(note="mine"))  # still a valid record
    code, _, err = main(capsys, "report", edited, "--out", tmp_path / "r")
    assert code == 2 and f"{edited / 'results.jsonl'}:2: changed since modelopt wrote it" in err
    assert f"{edited / 'results.jsonl'}:1" not in err, err
    # lines without a digest (an older modelopt's, another tool's) cannot be told apart
    old = copy_of(run_dir, tmp_path, "old")
    for i in (0, 1):
        edit_record(old, lambda r: r.pop("digest"), line=i)
    code, _, err = main(capsys, "report", old, "--out", tmp_path / "r")
    assert code == 2 and "carry no digest" in err and "may be a bug in modelopt" in err, err


def test_merge_vouches_only_for_lines_as_modelopt_wrote_them(run_dir, tmp_path):
    """A merged directory's lines are written anew: a line edited before the merge stays
    marked as not modelopt's (the merge does not launder it); the others stay modelopt's."""
    from modelopt.results import written

    edited = copy_of(run_dir, tmp_path, "edited")
    edit_record(edited, lambda r: r["metrics"].update(accuracy=1.0), line=0)
    merge.merge([edited], tmp_path / "merged")
    merged = tmp_path / "merged" / "results.jsonl"
    lines = merged.read_bytes().splitlines()
    assert sum(not written.sealed(line) for line in lines) == 1 and len(lines) == 2
    changed = written.changed([merged])  # still said to be changed, not a line of unknown make
    assert not changed["unsealed"] and len(changed["edited"]) == 1
    assert b'"accuracy": 1.0' in lines[int(changed["edited"][0].rsplit(":")[1]) - 1]


def test_a_digest_vouches_for_its_line_byte_for_byte():
    from modelopt.results import written

    line = written.seal(b'{"a": 1, "b": "x"}')
    assert json.loads(line)["digest"] and written.sealed(line) and written.sealed(line + b"\r")
    assert not written.sealed(line.replace(b'"a": 1', b'"a": 2'))
    assert not written.sealed(b'{"a": 1, "b": "x"}')  # no digest: written by something else
    assert written.state(b'{"a": 1, "b": "x"}') == "unsealed"
    # saved again by another tool (compacted, keys reordered): its digest is not of its text
    doc = json.loads(written.seal(b'{"a": 1, "z": "x"}'))  # digest sorts before z
    for again in (json.dumps(doc, separators=(",", ":")), json.dumps(doc, sort_keys=True)):
        assert written.state(again.encode()) == "edited", again
    assert written.sealed(b"\xef\xbb\xbf " + line)  # an editor's BOM, a leading space


def test_a_record_naming_a_huge_architecture_is_not_built(run_dir, tmp_path, capsys):
    """The model a record's config names is built before the saved weights go in: `hidden`
    of millions allocated gigabytes in every timing process. Counted on the meta device
    first, it is refused."""
    import psutil

    # depth 2: a hidden x hidden layer of 3/4 of the free memory (never allocated: refused)
    hidden = int((0.75 * psutil.virtual_memory().available / 4) ** 0.5)
    bad = copy_of(run_dir, tmp_path)
    for line in (0, 1):
        edit_record(bad, lambda r: r["cell"]["model"].update(hidden=hidden, depth=2), line)
    code, _, err = main(capsys, "time", bad, "--force", "--processes", "3")
    assert code == 1 and "more than half of this machine's free memory" in err, err


def test_text_joined_on_the_page_stays_inert_and_errors_keep_their_first_line(
        run_dir, tmp_path, capsys):
    """Review 16: a label joined `name(k=v)` from two inert strings made an image again; a
    description at the start of a line defined a link reference; a traceback's newlines,
    made spaces, put the whole traceback in the failures table; merge rewrote the records it
    copied; CSV cells starting with `=` were formulas."""
    bad = copy_of(run_dir, tmp_path)
    for line, q in ((0, 1), (1, 2)):
        edit_record(bad, lambda r, q=q: r["cell"].update(
            quantize={"name": "=![a]", "https://evil.example/x.png?q": q}), line)
    edit_record(bad, lambda r: r.update(status="failed", error="RuntimeError: <boom>\n"
                                        "Traceback (most recent call last): secret"), 1)
    edit_json(bad / "suite.json", lambda d: d.update(
        description="[r]: https://evil.example/b.png\n# heading"))
    code, _, err = main(capsys, "report", bad, "--out", tmp_path / "r", "--csv")
    assert code == 0, err
    page = (tmp_path / "r" / "sec.md").read_text()
    assert "](https" not in page and "\n[r]:" not in page and "\n# heading" not in page
    assert "RuntimeError: ‹boom›" in page and "secret" not in page
    assert ",=" not in (tmp_path / "r" / "sec.csv").read_text()
    code, _, err = main(capsys, "merge", bad, "--out", tmp_path / "m")
    merged = (tmp_path / "m" / "results.jsonl").read_text()
    assert code == 0 and "<boom>\\nTraceback" in merged and "=![a]" in merged, err


def test_time_refuses_a_linked_saved_model_with_a_message(run_dir, tmp_path, capsys):
    bad = copy_of(run_dir, tmp_path)
    saved = sorted((bad / "models").glob("*-model.pt"))[0]
    saved.unlink()
    saved.symlink_to(run_dir / "results.jsonl")
    code, _, err = main(capsys, "time", bad)
    assert code == 2 and "a symbolic link" in err, err


@pytest.mark.parametrize("headline", ["zz", 1])
def test_a_task_declaration_naming_no_declared_figure_is_refused(run_dir, tmp_path, capsys,
                                                                  headline):
    """suite.json's task whose headline or columns name no figure: KeyError in report."""
    bad = copy_of(run_dir, tmp_path)
    meta = json.loads((bad / "suite.json").read_text())
    meta["tasks"]["mine"] = {"headline": headline, "columns": [headline]}
    (bad / "suite.json").write_text(json.dumps(meta))
    code, _, err = main(capsys, "report", bad, "--out", tmp_path / "r")
    assert code == 2 and "suite.json" in err and "not a declared figure" in err, err
