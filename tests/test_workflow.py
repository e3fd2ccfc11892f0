"""The pull-request workflow example fails the job when the run or the gate fails."""

from pathlib import Path

import yaml

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
