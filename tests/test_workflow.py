"""The pull-request workflow example fails the job when the run or the gate fails."""

from pathlib import Path

import yaml

from tests.commands import command_dir

WORKFLOW = Path(__file__).resolve().parent.parent / ".github" / "workflows" / "benchmarks.yml"


def test_a_failing_run_or_gate_fails_the_job():
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["compare"]["steps"]
    by_id = {s.get("id"): s for s in steps if s.get("id")}
    for sid in ("current", "compare"):
        assert "|| true" not in by_id[sid]["run"], sid  # no swallowed exit code
    last = steps[-1]
    assert "steps.current.outcome" in last["if"] and "steps.compare.outcome" in last["if"]
    assert "exit 1" in last["run"]
    assert "modelopt compare ../baseline ../current" in by_id["compare"]["run"]


def test_a_suite_the_base_commit_refuses_still_gets_a_baseline(tmp_path):
    """A pull request that adds a technique to the suite: the base commit's modelopt refuses
    the head's suite file (exit 2), so the base runs its own suite and the gate allows the
    cells new on the head. The Baseline step's script, run with the real command line."""
    import os
    import subprocess

    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["compare"]["steps"]
    script = next(s["run"] for s in steps if s.get("name", "").startswith("Baseline"))
    script = "\n".join(line for line in script.splitlines()  # checkout and install: done here
                       if not line.strip().startswith(("git worktree", "make -C")))
    head, base = tmp_path / "head", tmp_path / "base"
    for d in (head / "suites", base / "suites", base / ".venv" / "bin"):
        d.mkdir(parents=True)
    suite = ("name: bench\nseeds: [0]\ndefaults:\n  dataset: {name: synthetic, n_samples: 200}\n"
             "  model: linear\n  train: {steps: 5}\n")
    (base / "suites" / "bench.yaml").write_text(suite)
    (head / "suites" / "bench.yaml").write_text(suite + "matrix: {quantize: [none, new_one]}\n")
    (base / ".venv" / "bin" / "modelopt").symlink_to(command_dir() / "modelopt")
    env_file = tmp_path / "github_env"
    env_file.write_text("")
    r = subprocess.run(["bash", "-e", "-c", script], cwd=head, capture_output=True, text=True,
                       env={**os.environ, "GITHUB_WORKSPACE": str(head),
                            "GITHUB_ENV": str(env_file)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "refuses the head's suite file" in r.stdout
    assert (tmp_path / "baseline" / "results.jsonl").read_text().count('"status": "ok"') == 1
    assert env_file.read_text() == "ALLOW_MISSING=--allow-missing\n"
