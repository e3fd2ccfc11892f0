"""The worked example (examples/byo): a user's own residual net and dataset, run end to end
as the README tells a new user to: data -> run -> report -> compare -> export."""

import json
import subprocess
from pathlib import Path

from tests.commands import command_dir

ROOT = Path(__file__).resolve().parents[1]


def test_the_bring_your_own_model_example_runs_end_to_end(tmp_path):
    out = tmp_path / "byo"
    r = subprocess.run(["bash", "examples/byo/run.sh", str(out)], cwd=ROOT, capture_output=True,
                       text=True, env={"PATH": "/usr/bin:/bin", "BIN": str(command_dir()),
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


def test_the_trained_model_example_measures_the_users_own_model(tmp_path):
    """examples/trained: a model trained in plain PyTorch (torchvision's ImageFolder and
    transforms, class folders whose sorted order is not the digits'), saved, then measured
    by modelopt as loaded: the baseline's accuracy is the one train.py printed, to the image;
    int8, pruning + fine-tune and distillation from it run."""
    out = tmp_path / "trained"
    r = subprocess.run(["bash", "examples/trained/run.sh", str(out)], cwd=ROOT,
                       capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "BIN": str(command_dir()),
                            "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    theirs = json.loads((out / "train.json").read_text())
    recs = [json.loads(line) for line in (out / "run" / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 4 and all(rec["status"] == "ok" for rec in recs), recs
    loaded = [rec for rec in recs if rec["cell"]["train"]["steps"] == 0
              and not rec["cell"].get("prune") and not rec["cell"].get("quantize")]
    assert [rec["metrics"]["accuracy"] for rec in loaded] == [theirs["test_accuracy"]]
    assert loaded[0]["cell"]["model"]["weights"]["sha256"]
    kd = next(rec for rec in recs if rec["cell"].get("distill"))
    assert kd["metrics"]["teacher_accuracy"] == theirs["test_accuracy"]
    report = (out / "report" / "trained_example.md").read_text()
    assert "int8_static" in report
    assert f"**trained weights**: `{out / 'model.pth'}`" in report  # named, with its hash
    # every row against the model as loaded, the distilled student too; int8 at its speed
    assert "No baseline for" not in report and "onnxruntime int8 kernels" in report
