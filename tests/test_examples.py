"""The worked example (examples/byo): a user's own residual net and dataset, run end to end
as the README tells a new user to: data -> run -> report -> compare -> export."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_bring_your_own_model_example_runs_end_to_end(tmp_path):
    out = tmp_path / "byo"
    r = subprocess.run(["bash", "examples/byo/run.sh", str(out)], cwd=ROOT, capture_output=True,
                       text=True, env={"PATH": "/usr/bin:/bin", "BIN": str(Path(sys.executable).parent),
                                       "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    images = [json.loads(line) for line in (out / "images" / "results.jsonl").read_text().splitlines()]
    assert len(images) == 6 and all(rec["status"] == "ok" for rec in images)
    assert all(rec["cell"]["plugins"]["modules"] == ["my_nets"] for rec in images)
    slim = [rec for rec in images if (rec["cell"].get("prune") or {}).get("name") == "l1_structured"]
    assert all(rec["models"]["slimmed"]["params"] < 0.5 * rec["metrics"]["params"] for rec in slim)
    report = (out / "report" / "byo-images.md").read_text()
    assert "l1_structured" in report and "(slimmed)" in report
    assert "byo-table" in (out / "report" / "byo-table.md").read_text()
    assert "OK" in (out / "compare.md").read_text()
    names = {e["name"] for e in json.loads((out / "export" / "bigger_is_better.json").read_text())}
    assert any("byo-images" in n for n in names) and any("byo-table" in n for n in names)
