"""The GPU device check: what a lent GPU machine needs (wheels), checked here; run there.

`download` fetches the wheels the lent machine lacks (Python 3.12, x86-64, no registry there);
`check` verifies them and the upload without touching the network; `remote` runs the CUDA
tests, the GPU suite and its report, training throughput against a plain loop, within a time
budget, and packs what comes back.
tools/device_check.sh is the entry point (`make device-check`); README, "Device check (GPU)".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = Path(__file__).resolve().parent

# What the lent machine lacks, as wheels for its Python 3.12. The versions are this venv's
# (make install, constraints.txt); pydantic pins pydantic-core exactly, and pydantic needs a
# typing-extensions newer than the machine may have, so that one travels too (it is
# backwards compatible: shadowing the machine's own is safe).
WHEELS = {
    "pydantic": "2.14.4",
    "pydantic-core": "2.50.5",
    "annotated-types": "0.8.0",
    "typing-inspection": "0.4.5",
    "typing-extensions": "4.16.0",
    "mnist1d": "0.0.2.post1",
    "torch-pruning": "1.6.1",
    "torchao": "0.18.0",
}
PYTHON = (3, 12)
# The lent machine's own versions of what modelopt touches (KINDS.md's pip list, 2026-11),
# and the rest of what the tests import, which it has (device_packages.txt) at versions it
# does not say: `--rehearse` installs them to run the tests on its stack here.
MACHINE_VERSIONS = {
    "torch": "2.11.0", "torchvision": "0.26.0", "numpy": "2.5.2", "onnx": "1.23.1",
    "onnxruntime": "1.30.0", "onnxscript": "0.7.2", "transformers": "5.17.0",
    "tokenizers": "0.23.2", "safetensors": "0.8.0", "huggingface-hub": "1.33.0",
}
MACHINE_UNPINNED = ("pandas", "matplotlib", "tabulate", "scikit-learn", "scipy", "pytest",
                    "pytest-benchmark", "pytest-xdist", "pyyaml", "psutil", "tqdm", "timm",
                    "hypothesis", "requests", "pillow")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64", "any")
MAX_GLIBC = 35  # the lent machine's manylinux level we allow (its Python is Ubuntu 24.04's)
COMMAND = "bash tools/device_check.sh --remote"
CARRY = [".whl"]
TIMEOUT_S = 480  # the run's timeout_s: the check's 6 minutes, the install and the packing
MAX_COMMAND = 2000  # characters of one device command
MAX_UPLOAD = 64 * 2**20  # the working tree that travels, the carried wheels included
THROUGHPUT = "throughput.json"  # pytest-benchmark's figures of the throughput phase


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def device_packages() -> set[str]:
    """What the lent machine already has (tools/device_packages.txt, from the device tool's
    KINDS.md)."""
    lines = (TOOLS / "device_packages.txt").read_text().splitlines()
    return {norm(s) for s in (ln.split("#")[0].strip() for ln in lines) if s}


def wheel_name(path: Path) -> tuple[str, str, list[str]]:
    """(normalized name, version, tags) from a wheel's file name."""
    parts = path.name[:-len(".whl")].split("-")
    if len(parts) not in (5, 6):
        raise ValueError(f"{path.name} is not a wheel file name")
    return norm(parts[0]), parts[1], parts[-3:]


def tag_fits(tags: list[str]) -> bool:
    """Whether a wheel's (python, abi, platform) tags install on CPython 3.12, x86-64 Linux."""
    pys, abis, plats = (t.split(".") for t in tags)
    minor = PYTHON[1]
    py_ok = any(p in ("py3", f"py3{minor}", f"cp3{minor}") or
                (p.startswith("cp3") and "abi3" in abis and int(p[3:]) <= minor) for p in pys)
    abi_ok = any(a in ("none", "abi3", f"cp3{minor}") for a in abis)

    def plat_ok(p: str) -> bool:
        if p == "any" or p in ("manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"):
            return True
        m = re.fullmatch(r"manylinux_2_(\d+)_x86_64", p)
        return bool(m) and int(m.group(1)) <= MAX_GLIBC

    return py_ok and abi_ok and any(plat_ok(p) for p in plats)


def requirements(path: Path) -> list[str]:
    """What a wheel needs at run time on the lent machine (no extras), as requirement strings."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    env = {"python_version": f"{PYTHON[0]}.{PYTHON[1]}", "python_full_version": "3.12.3",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
           "os_name": "posix", "implementation_name": "cpython", "extra": ""}
    out = []
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is None or req.marker.evaluate(env):
            out.append(str(req))
    return out


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)==([^\s#]+).*", line)
        if m:
            pins[norm(m.group(1))] = m.group(2)
    return pins


def upload_bytes(wheels: Path) -> int | None:
    """The working tree that travels (tracked and untracked-not-ignored files) plus the
    wheels; None where this is no git checkout (the lent machine's copy may be none)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    files = [ROOT / f for f in out.stdout.decode().split("\0") if f]
    return (sum(f.stat().st_size for f in files if f.is_file())
            + sum(w.stat().st_size for w in wheels.glob("*.whl")))


def check(wheels: Path) -> list[str]:
    """Everything wrong with the preparation, said so that it can be fixed; [] when ready."""
    from packaging.requirements import Requirement

    problems, found = [], {}
    for w in sorted(wheels.glob("*.whl")) if wheels.is_dir() else []:
        try:
            name, version, tags = wheel_name(w)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        found.setdefault(name, []).append((version, w))
        if not tag_fits(tags):
            problems.append(f"{w.name} does not install on CPython 3.12 x86-64 Linux")
    for name, version in WHEELS.items():
        have = found.get(name, [])
        if not have:
            problems.append(f"missing wheel {name}=={version} in {wheels} "
                            "(make device-check downloads it)")
        elif [v for v, _ in have] != [version]:
            problems.append(f"{name}: want exactly {version} in {wheels}, found "
                            f"{', '.join(sorted(v for v, _ in have))} (two versions stop the install)")
    for name in sorted(set(found) - set(WHEELS)):
        problems.append(f"{found[name][0][1].name} is not in tools/device_check.py's WHEELS")
    for name, pin in constraints().items():
        if name in WHEELS and WHEELS[name] != pin:
            problems.append(f"{name}: WHEELS has {WHEELS[name]}, constraints.txt pins {pin}")
    device = device_packages()
    for name, have in found.items():
        for text in requirements(have[0][1]):
            req = Requirement(text)
            need = norm(req.name)
            if need in WHEELS:
                if not req.specifier.contains(WHEELS[need], prereleases=True):
                    problems.append(f"{name} needs {text}; WHEELS has {need}=={WHEELS[need]}")
            elif need not in device:
                problems.append(f"{name} needs {text}, which the lent machine lacks: add it to "
                                "WHEELS (tools/device_check.py)")
    problems += check_suite(ROOT / "suites" / "gpu.yaml")
    if len(COMMAND) > MAX_COMMAND:
        problems.append(f"the device command is {len(COMMAND)} characters; at most {MAX_COMMAND}")
    size = upload_bytes(wheels) if wheels.is_dir() else 0
    if size is not None and size > MAX_UPLOAD:
        problems.append(f"the upload is {size / 2**20:.1f} MiB (tree + wheels); at most 64 MiB")
    return problems


def check_suite(path: Path) -> list[str]:
    """The GPU suite loads and validates (its cuda cells can only fail here, at run time)."""
    try:
        from modelopt.spec.suite import load
    except ImportError as exc:
        return [f"cannot import modelopt to validate {path.name} ({exc}); run make install"]
    try:
        load(path)
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with it, said as it is
        return [f"{path.relative_to(ROOT)} does not load: {exc}"]
    return []


def download(wheels: Path) -> int:
    """Fetch the pinned wheels that are not there yet (none: no network needed)."""
    have = {wheel_name(w)[:2] for w in wheels.glob("*.whl")} if wheels.is_dir() else set()
    todo = [f"{n}=={v}" for n, v in WHEELS.items() if (n, v) not in have]
    if not todo:
        return 0
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--python-version", f"{PYTHON[0]}.{PYTHON[1]}", "--implementation", "cp",
           *(a for p in PLATFORMS for a in ("--platform", p)), "-d", str(wheels), *todo]
    print(f"device-check: downloading {', '.join(todo)} into {wheels}", flush=True)
    return subprocess.run(cmd).returncode


def cmd_prepare(args) -> int:
    wheels = Path(args.wheels)
    if args.download and download(wheels) != 0:
        print("device-check: pip download failed (see above)", file=sys.stderr)
        return 1
    problems = check(wheels)
    for p in problems:
        print(f"device-check: NOT READY: {p}", file=sys.stderr)
    if problems:
        return 1
    n, size = len(list(wheels.glob("*.whl"))), upload_bytes(wheels)
    print(f"device-check: ready: {n} wheels in {wheels} "
          f"({sum(w.stat().st_size for w in wheels.glob('*.whl')) / 2**20:.1f} MiB), upload "
          + (f"{size / 2**20:.1f} MiB of 64" if size is not None else "size unknown (no git checkout)"))
    print("device-check: on a lent GPU machine, one call of the device tool's run:")
    print(f"  command:   {COMMAND}")
    print(f"  carry:     {json.dumps(CARRY)}")
    print(f"  timeout_s: {TIMEOUT_S}")
    print("  back in $OUT: device_check.tar.gz (results, report, logs), device_check.log, "
          f"summary.txt, cuda_tests.xml, all_tests.xml, {THROUGHPUT}")
    return 0


# ---------------------------------------------------------------- on the GPU machine

class Log:
    """Lines to the terminal and to $OUT/device_check.log as they come."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, msg: str) -> None:
        line = f"[device-check {time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with self.path.open("a") as f:
            f.write(line + "\n")

    def run(self, cmd: list[str], timeout: float, env: dict | None = None) -> tuple[str, float]:
        """Run under `timeout`, its output streamed into the log as it comes; ('ok' |
        'failed (rc N)' | 'timed out', seconds)."""
        timeout = max(1, int(timeout))
        self(f"$ {' '.join(cmd)}   (at most {timeout} s)")
        t0 = time.monotonic()
        with self.path.open("ab") as f:
            p = subprocess.Popen(["timeout", "-k", "10", str(timeout), *cmd], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 start_new_session=True)

            def copy():
                for line in iter(p.stdout.readline, b""):
                    sys.stdout.buffer.write(line)
                    sys.stdout.flush()
                    f.write(line)
                    f.flush()

            reader = threading.Thread(target=copy, daemon=True)
            reader.start()
            try:
                rc = p.wait(timeout=timeout + 30)
            except subprocess.TimeoutExpired:  # `timeout` itself stuck: end the whole group
                os.killpg(p.pid, signal.SIGKILL)
                rc = p.wait()
            reader.join(5)  # a grandchild holding the pipe open must not hold us
        seconds = time.monotonic() - t0
        if rc in (124, 137, -9):
            return "timed out", seconds
        return ("ok" if rc == 0 else f"failed (rc {rc})"), seconds


def junit_counts(path: Path) -> str:
    import xml.etree.ElementTree as ET

    if not path.exists():
        return "no junit file"
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    keys = ("tests", "failures", "errors", "skipped")
    return ", ".join(f"{k} {suite.get(k, '?')}" for k in keys)


def throughput(path: Path) -> str:
    """The throughput benchmark's figures in one line, from pytest-benchmark's JSON."""
    try:
        info = json.loads(path.read_text())["benchmarks"][0]["extra_info"]
    except (OSError, ValueError, KeyError, IndexError):
        return "no figures"
    return (f"modelopt / plain loop {info['modelopt_over_plain']:.3f}x "
            f"(min {info['ratio_min']:.3f}, max {info['ratio_max']:.3f}, {info['pairs']} pairs; "
            f"{info['modelopt_samples_s']:.0f} vs {info['plain_samples_s']:.0f} samples/s; "
            f"target {info['target']})")


def cmd_stack(args) -> int:
    """The lent machine's packages that the tests import, as pip requirements."""
    have = device_packages()
    missing = [n for n in [*MACHINE_VERSIONS, *MACHINE_UNPINNED] if norm(n) not in have]
    if missing:
        print(f"device-check: not on the lent machine: {', '.join(missing)}", file=sys.stderr)
        return 1
    print(" ".join([f"{n}=={v}" for n, v in MACHINE_VERSIONS.items()] + list(MACHINE_UNPINNED)))
    return 0


def cmd_lacks(args) -> int:
    """What the wheels bring that the lent machine lacks (the rehearsal removes it from its
    venv, where the registry installed it as another package's need)."""
    have = device_packages()
    print(" ".join(name for name in WHEELS if norm(name) not in have))
    return 0


def cmd_remote(args) -> int:
    out = Path(args.out)
    work = Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    log = Log(out / "device_check.log")
    deadline = args.deadline or time.time() + args.budget
    py = sys.executable
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "MODELOPT_CACHE": str(work / "cache"),
           "PYTHONPATH": os.pathsep.join([str(TOOLS), str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def left(reserve: float = 20.0) -> float:
        return deadline - time.time() - reserve

    phases: dict[str, str] = {}
    info = subprocess.run([py, "-c", "import torch, sys; print(sys.version.split()[0], "
                           "torch.__version__, torch.cuda.is_available() and "
                           "torch.cuda.get_device_name(0))"],
                          capture_output=True, text=True, env=env)
    log(f"python, torch, gpu: {info.stdout.strip() or info.stderr.strip()[-500:]}")
    imports = subprocess.run([py, "-c", "import pydantic, mnist1d, torch_pruning, torchao, modelopt; "
                              "print(modelopt.__file__, pydantic.VERSION, torchao.__version__)"],
                             capture_output=True, text=True, env=env)
    log(f"imports: {imports.stdout.strip() or imports.stderr.strip()[-1500:]}")
    if imports.returncode != 0:
        phases["imports"] = "failed"

    # 1. every single-GPU CUDA test, none skipped (the plugin selects them and fails on a skip)
    if "imports" not in phases:
        status, s = log.run([py, "-m", "pytest", "-v", "-rs", "-p", "device_pytest", "tests",
                             f"--junitxml={out / 'cuda_tests.xml'}"],
                            min(args.tests_s, left(180)), env)
        phases["cuda tests"] = f"{status} in {s:.0f} s; {junit_counts(out / 'cuda_tests.xml')}"

        # 2. the GPU suite, then its report
        results, reports = work / "results" / "gpu", work / "reports"
        # three timing processes: CUDA-event timings vary little, and the lease is short
        status, s = log.run([py, "-m", "modelopt", "run", args.suite, "--out", str(results),
                             "--jobs", "1", "--timing-processes", "3"],
                            min(args.suite_s, left(45)), env)
        phases["gpu suite"] = f"{status} in {s:.0f} s"
        status, s = log.run([py, "-m", "modelopt", "report", str(results), "--out", str(reports)],
                            min(60, left(10)), env)
        phases["report"] = f"{status} in {s:.0f} s"

        # 3. training throughput: modelopt against a plain PyTorch loop on the GPU
        if left(15) > 30:
            status, s = log.run([py, "-m", "pytest", "-q", "-s", "--harness", "--benchmark-only",
                                 "benchmarks/test_harness.py::test_cuda_cell_rate_vs_plain_loop",
                                 f"--benchmark-json={out / THROUGHPUT}"],
                                min(args.throughput_s, left(15)), env)
            figures = throughput(out / THROUGHPUT)
            if status == "ok" and figures == "no figures":  # skipped: torch saw no GPU
                status = "failed (no figures)"
            phases["throughput"] = f"{status} in {s:.0f} s; {figures}"
        else:
            phases["throughput"] = "not run (no time left)"

        # 4. the whole test suite with a GPU present, in what time is left
        if left(15) > 60:
            status, s = log.run([py, "-m", "pytest", "-q", "-rfEs", "-n", "8", "tests",
                                 f"--junitxml={out / 'all_tests.xml'}"], left(15), env)
            phases["all tests"] = f"{status} in {s:.0f} s; {junit_counts(out / 'all_tests.xml')}"
        else:
            phases["all tests"] = "not run (no time left)"

    summary = "\n".join(f"{k}: {v}" for k, v in phases.items())
    (out / "summary.txt").write_text(f"{info.stdout.strip()}\n{summary}\n")
    log("summary:\n" + summary)
    pack(out, work, log)
    optional = ("all tests", "throughput")  # what the time left allows
    bad = [k for k, v in phases.items()
           if not v.startswith("ok") and not (k in optional and v.startswith(("timed", "not run")))]
    log("FAILED: " + ", ".join(bad) if bad else "all phases ok")
    return 1 if bad else 0


PACKED = {".jsonl", ".json", ".md", ".png", ".csv", ".txt", ".log", ".xml"}


def pack(out: Path, work: Path, log: Log) -> None:
    """One archive: results and report (records, timings, tables, plots; not the saved
    models, 45 MB a resnet18), the log and the junit files."""
    dest = out / "device_check.tar.gz"
    with tarfile.open(dest, "w:gz") as tar:
        for path in sorted(work.rglob("*")):
            rel = path.relative_to(work)
            if (path.is_file() and rel.parts[0] in ("results", "reports")
                    and path.suffix in PACKED and path.stat().st_size < 4 * 2**20):
                tar.add(path, arcname=str(rel))
        for name in ("device_check.log", "summary.txt", "cuda_tests.xml", "all_tests.xml",
                     THROUGHPUT):
            if (out / name).exists():
                tar.add(out / name, arcname=f"logs/{name}")
    log(f"packed {dest} ({dest.stat().st_size / 2**20:.1f} MiB)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("download", "check"):
        s = sub.add_parser(name, help=f"{name} the wheels, then check the preparation")
        s.add_argument("--wheels", default=str(ROOT / ".whl"), help="wheel folder (default .whl)")
        s.set_defaults(fn=cmd_prepare, download=name == "download")
    st = sub.add_parser("stack", help="the lent machine's packages as pip requirements (--rehearse)")
    st.set_defaults(fn=cmd_stack)
    sub.add_parser("lacks", help="what the wheels bring that the lent machine lacks "
                   "(--rehearse)").set_defaults(fn=cmd_lacks)
    r = sub.add_parser("remote", help="on the GPU machine: CUDA tests, GPU suite, report, archive")
    r.add_argument("--out", default=os.environ.get("OUT") or "/tmp/device_check_out")
    r.add_argument("--work", default="/tmp/device_check")
    r.add_argument("--suite", default="suites/gpu.yaml")
    r.add_argument("--budget", type=float, default=360.0, help="seconds for everything")
    r.add_argument("--deadline", type=float, default=None, help="epoch seconds (the script's)")
    r.add_argument("--tests-s", type=float, default=170.0, help="at most, the CUDA tests")
    r.add_argument("--suite-s", type=float, default=190.0, help="at most, the GPU suite")
    r.add_argument("--throughput-s", type=float, default=60.0,
                   help="at most, modelopt's training throughput against a plain loop")
    r.set_defaults(fn=cmd_remote)
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
