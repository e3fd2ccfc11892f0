"""The GPU device check's preparation (tools/device_check.sh, make device-check), without a GPU
and without the network: fake wheels in a temporary folder stand in for the downloaded ones."""

import importlib.util
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch

from modelopt.results.report import baselines
from modelopt.run import backends
from modelopt.spec.suite import load

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"


def _module(name):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


dc = _module("device_check")
plugin = _module("device_pytest")


def fake_wheel(folder: Path, name: str, version: str, requires=(), tag="py3-none-any") -> Path:
    dist = name.replace("-", "_")
    path = folder / f"{dist}-{version}-{tag}.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{dist}-{version}.dist-info/METADATA", meta)
    return path


REQUIRES = {  # as the real wheels say (tools/device_check.py checks them against the machine)
    "pydantic": ["annotated-types>=0.6.0", "pydantic-core==2.50.5", "typing-extensions>=4.16.0",
                 "typing-inspection>=0.4.4", "email-validator>=2.0.0; extra == 'email'"],
    "mnist1d": ["requests", "numpy", "matplotlib", "scipy", "torch ; extra == 'all'"],
    "torch-pruning": ["torch>=2.0", "numpy"],
}


@pytest.fixture
def wheels(tmp_path):
    folder = tmp_path / "whl"
    folder.mkdir()
    for name, version in dc.WHEELS.items():
        fake_wheel(folder, name, version, REQUIRES.get(name, ()))
    return folder


def run_check(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(TOOLS / "device_check.sh"), "--check"], cwd=ROOT,
                          env={**os.environ, "WHEELS": str(folder)}, capture_output=True,
                          text=True, timeout=120)


def test_the_check_passes_says_no_gpu_and_prints_the_one_command(wheels):
    r = run_check(wheels)
    assert r.returncode == 0, r.stderr
    assert dc.COMMAND in r.stdout and len(dc.COMMAND) <= 2000
    if not torch.cuda.is_available():
        assert "no GPU here" in r.stdout


def test_a_missing_wheel_fails_the_check(wheels):
    next(wheels.glob("torchao-*.whl")).unlink()
    r = run_check(wheels)
    assert r.returncode == 1
    assert "missing wheel torchao==0.18.0" in r.stderr and "no GPU" not in r.stdout


def test_two_versions_a_foreign_wheel_and_a_wrong_python_are_reported(wheels):
    fake_wheel(wheels, "mnist1d", "0.0.1")
    fake_wheel(wheels, "rich", "13.0.0")
    next(wheels.glob("pydantic_core-*.whl")).unlink()
    fake_wheel(wheels, "pydantic-core", "2.50.5", tag="cp311-cp311-manylinux_2_17_x86_64")
    problems = "\n".join(dc.check(wheels))
    assert "mnist1d: want exactly 0.0.2.post1" in problems
    assert "rich-13.0.0-py3-none-any.whl is not in" in problems
    assert "cp311-cp311-manylinux_2_17_x86_64.whl does not install on CPython 3.12" in problems


def test_a_need_the_machine_lacks_or_a_wrong_pin_is_reported(wheels):
    next(wheels.glob("mnist1d-*.whl")).unlink()
    fake_wheel(wheels, "mnist1d", "0.0.2.post1", ["numpy", "notapackage>=1"])
    next(wheels.glob("pydantic-*.whl")).unlink()
    fake_wheel(wheels, "pydantic", "2.14.4", ["pydantic-core==2.99.0"])
    problems = "\n".join(dc.check(wheels))
    assert "mnist1d needs notapackage>=1, which the lent machine lacks" in problems
    assert "pydantic needs pydantic-core==2.99.0; WHEELS has pydantic-core==2.50.5" in problems


def test_the_pins_agree_with_constraints_and_the_wheel_tags_are_judged():
    assert dc.WHEELS["torchao"] == dc.constraints()["torchao"]
    assert dc.tag_fits(["cp310", "abi3", "manylinux_2_24_x86_64.manylinux_2_28_x86_64"])
    assert dc.tag_fits(["cp312", "cp312", "manylinux2014_x86_64.manylinux_2_17_x86_64"])
    assert not dc.tag_fits(["cp311", "cp311", "manylinux_2_17_x86_64"])
    assert not dc.tag_fits(["py3", "none", "macosx_11_0_arm64"])


def test_the_rehearsal_installs_the_lent_machines_own_stack(capsys, monkeypatch):
    """`--rehearse` runs the tests here on the machine's versions (torch 2.11 found what the
    pinned venv hid): every package it asks for is one the machine has, the wheels' own
    (pydantic) not among them; a package the machine lacks is refused."""
    assert dc.main(["stack"]) == 0
    wanted = capsys.readouterr().out.split()
    assert "torch==2.11.0" in wanted and "torchvision==0.26.0" in wanted
    names = {dc.norm(w.split("==")[0]) for w in wanted}
    assert names <= dc.device_packages() and not names & {dc.norm(w) for w in dc.WHEELS}
    assert dc.main(["lacks"]) == 0  # taken out of the rehearsal's venv: the wheels bring them
    lacks = capsys.readouterr().out.split()
    assert "pydantic" in lacks and "torchao" in lacks and "typing-extensions" not in lacks
    monkeypatch.setattr(dc, "MACHINE_UNPINNED", (*dc.MACHINE_UNPINNED, "mkdocs"))
    assert dc.main(["stack"]) == 1
    assert "not on the lent machine: mkdocs" in capsys.readouterr().err


def test_the_gpu_suite_loads_and_names_the_gpu_paths():
    suite = load(ROOT / "suites" / "gpu.yaml")
    configs = [c.as_config() for c in suite.cells]
    cells = [(c["backend"], (c.get("deploy") or {}).get("name"), (c.get("prune") or {}).get("name"),
              c["train"]["batch_size"]) for c in configs]
    assert {c["model"]["name"] for c in configs} == {"resnet18", "gpt"}
    gpt = [c for c in configs if c["model"]["name"] == "gpt"]  # a transformer: bf16, int8
    assert any(c["backend"].get("amp_dtype") == "bf16" and c["backend"].get("amp") for c in gpt)
    # trained under bf16 autocast, and shipped in bf16 too (the resnet and the GPT)
    assert sum((c.get("quantize") or {}).get("name") == "bf16" and c["backend"].get("amp")
               for c in configs) == 2
    assert any((c.get("quantize") or {}).get("name") == "int8_weight_only" for c in gpt)
    assert not suite.spec.skip_unavailable  # on the GPU machine a cell that cannot run fails
    amp = {b.get("amp_dtype") if b.get("amp") else "fp32" for b, *_ in cells if b["name"] == "cuda"}
    assert amp == {"fp32", "fp16", "bf16"}
    assert any(d == "compile" for _, d, _, _ in cells)
    assert any(p == "l1_structured" for _, _, p, _ in cells)
    assert {(b["world_size"], b["dist_backend"], b["device"])
            for b, *_ in cells if b["name"] == "ddp"} == {(1, "nccl", "cuda")}
    assert len({bs for *_, bs in cells}) >= 2
    # the report pairs every batch-1024 cell with the fp32 one (and batch 256 with itself)
    agg = pd.DataFrame([{"n": 1, "cell": c.as_config(), "cell_id": c.cell_id} for c in suite.cells])
    paired, _ = baselines(agg, suite.spec.baseline)
    fp32 = next(c.cell_id for c, (b, d, p, bs) in zip(suite.cells, cells)
                if b == {"name": "cuda", "device": 0, "amp": False, "amp_dtype": "bf16"}
                and d is None and p is None and bs == 1024)
    assert {c.cell_id for c in suite.cells if c.as_config()["train"]["batch_size"] == 1024} == {
        k for k, v in paired.items() if v["cell_id"] == fp32}
    if not torch.cuda.is_available():  # what the cells need is checked where they run
        for b, *_ in cells:
            with pytest.raises(backends.BackendUnavailable, match="CUDA is not available"):
                backends.build(b)


def test_the_cuda_test_phase_fails_on_a_skip(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.skipif(True, reason='needs a CUDA GPU')\n"
        "def test_gpu():\n    pass\n\n"
        "@pytest.mark.skipif(True, reason='needs two CUDA GPUs')\n"
        "def test_two_gpus():\n    pass\n\n"
        "def test_cpu_only():\n    pass\n")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
                        "device_pytest", "--rootdir", str(tmp_path), str(tmp_path)],
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(TOOLS)},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout
    assert "1 CUDA test(s) skipped" in r.stdout and "test_x.py::test_gpu: Skipped" in r.stdout
    assert "1 deselected" in r.stdout and "test_two_gpus:" not in r.stdout


def test_the_archive_leaves_the_saved_models_out(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "results" / "gpu" / "models").mkdir(parents=True)
    (work / "reports").mkdir()
    out.mkdir()
    (work / "results" / "gpu" / "results.jsonl").write_text("{}\n")
    (work / "results" / "gpu" / "models" / "a.pt").write_bytes(b"0" * 100)
    (work / "reports" / "gpu.md").write_text("# gpu\n")
    (out / "device_check.log").write_text("log\n")
    dc.pack(out, work, dc.Log(out / "device_check.log"))
    with tarfile.open(out / "device_check.tar.gz") as tar:
        names = set(tar.getnames())
    assert names == {"results/gpu/results.jsonl", "reports/gpu.md", "logs/device_check.log"}


def test_the_throughput_line_reads_pytest_benchmarks_json(tmp_path):
    """The summary's throughput line from a JSON file pytest-benchmark itself wrote (a
    stand-in benchmark with the GPU benchmark's extra_info keys); a skipped one has none."""
    figures = {"modelopt_over_plain": 0.97, "ratio_min": 0.95, "ratio_max": 0.99, "pairs": 5,
               "modelopt_samples_s": 97000.0, "plain_samples_s": 100000.0, "target": 0.95}
    (tmp_path / "test_b.py").write_text(
        "import pytest\n\n"
        "def test_rate(benchmark):\n"
        f"    benchmark.extra_info.update({figures!r})\n"
        "    benchmark.pedantic(lambda: None, rounds=1)\n\n"
        "@pytest.mark.skip(reason='needs a CUDA GPU')\n"
        "def test_skipped(benchmark):\n    benchmark(lambda: None)\n")
    for name in ("rate", "skipped"):
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--rootdir", str(tmp_path), f"{tmp_path / 'test_b.py'}::test_{name}",
                        f"--benchmark-json={tmp_path / name}.json"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60, check=True)
    assert dc.throughput(tmp_path / "rate.json") == (
        "modelopt / plain loop 0.970x (min 0.950, max 0.990, 5 pairs; 97000 vs 100000 "
        "samples/s; target 0.95)")
    assert dc.throughput(tmp_path / "skipped.json") == "no figures"
    assert dc.throughput(tmp_path / "absent.json") == "no figures"


def test_outside_a_git_checkout_the_upload_size_is_unknown_not_an_error(tmp_path, monkeypatch):
    """The lent machine's copy of the tree may hold no .git: the whole test suite runs there."""
    monkeypatch.setattr(dc, "ROOT", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert dc.upload_bytes(tmp_path) is None
