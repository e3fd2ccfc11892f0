"""Docs that cannot rot: every suite in the README and docs/ loads, the quick start's
commands run, the site builds strictly, and the workflows call make targets that exist."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modelopt.spec.suite import load
from tests.commands import command_dir

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted(p for p in (ROOT / "docs").rglob("*.md")
                                      if "generated" not in p.parts)
FENCE = re.compile(r"^```yaml[^\n]*\n(.*?)^```", re.S | re.M)


def yaml_blocks():
    for page in PAGES:
        text = page.read_text()
        for m in FENCE.finditer(text):
            yield pytest.param(m.group(1), id=f"{page.relative_to(ROOT)}:"
                               f"{text[:m.start()].count(chr(10)) + 1}")


def test_the_readme_is_short_and_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert text.split("```")[1].strip().splitlines() == [
        "make bench   # fresh machine: creates .venv, installs, runs the default suite, writes reports/",
        "make test    # fresh machine: creates .venv, installs, runs the tests"]


@pytest.mark.parametrize("block", list(yaml_blocks()))
def test_every_yaml_block_is_yaml_and_every_suite_in_it_loads(block, tmp_path, monkeypatch):
    """A block that names a suite (`name:`) loads as one, beside what the docs say it needs:
    the committed weights (suites/weights), the worked example's data and plugin."""
    doc = yaml.safe_load(block)
    if not (isinstance(doc, dict) and "name" in doc):
        return  # a fragment of a suite (a key or two), shown in its context
    shutil.copytree(ROOT / "suites" / "weights", tmp_path / "weights")
    shutil.copy(ROOT / "examples" / "byo" / "my_nets.py", tmp_path)
    subprocess.run([sys.executable, str(ROOT / "examples" / "byo" / "make_data.py"),
                    str(tmp_path / "examples" / "byo" / "data")], check=True,
                   capture_output=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "suite.yaml").write_text(block)
    assert load(tmp_path / "suite.yaml").cells


def test_the_quick_start_runs(tmp_path):
    """The README's quick-start commands, as written (with the run directory in tmp)."""
    text = (ROOT / "README.md").read_text()
    start = text[text.index("## Quick start"):]
    commands = [line.split("#")[0].strip() for line in
                start[start.index("```sh") + 5:start.index("```", start.index("```sh") + 5)]
                .strip().splitlines()]
    out = tmp_path / "quickstart"
    bin_dir = command_dir()
    ran = 0
    for command in commands:
        if not command.startswith(".venv/bin/modelopt"):
            continue  # make install: this test runs in the installed venv
        args = command.split()[1:]
        args = [str(out) if a == "results/quickstart" else
                str(out / "report") if a == "results/quickstart/report" else a for a in args]
        r = subprocess.run([str(bin_dir / "modelopt"), *args], cwd=ROOT, capture_output=True,
                           text=True)
        assert r.returncode == 0, (command, r.stderr[-2000:])
        ran += 1
    assert ran == 4
    page = (out / "report" / "quickstart.md").read_text()
    assert "int8_static" in page and "onnxruntime int8 kernels" in page


def test_the_site_builds_strictly(tmp_path):
    """In a copy of the docs' sources: building writes docs/generated/, whose committed
    pages the test below compares with the code's, and never with a build of this run.
    (Skipped only without MkDocs: the device check's GPU machine has none; `make test`'s
    venv does.)"""
    pytest.importorskip("material", reason="MkDocs Material is a dev extra")
    repo = tmp_path / "repo"
    for name in ("docs", "tools", "reports"):
        shutil.copytree(ROOT / name, repo / name)
    for name in ("mkdocs.yml", "README.md"):
        shutil.copy(ROOT / name, repo / name)
    env = {k: v for k, v in os.environ.items() if k != "MODELOPT_PLUGINS"}  # conftest's
    r = subprocess.run([sys.executable, "tools/gen_docs.py"], cwd=repo, capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(Path(sys.executable).parent / "mkdocs"), "build", "--strict",
                        "--site-dir", str(tmp_path / "site")], cwd=repo, capture_output=True,
                       text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "site" / "generated" / "techniques" / "index.html").is_file()
    # a report link made for GitHub (../reports/) points at the site's copy
    assert 'href="../generated/findings/trained/"' in (
        tmp_path / "site" / "getting-started" / "index.html").read_text()


def test_the_committed_reference_pages_are_what_the_code_generates():
    """docs/generated/{techniques,metrics,cli}.md are committed (the docs read on GitHub have
    them): a registry, metric or option changed without `make docs` fails here. Generated in
    a fresh process without the tests' own plugins."""
    code = ("import json, sys; sys.path.insert(0, 'tools'); import gen_docs; "
            "from modelopt.spec.listing import listing_markdown; "
            "print(json.dumps({'techniques.md': listing_markdown(), "
            "'metrics.md': gen_docs.metrics_page(), 'cli.md': gen_docs.cli_page()}))")
    env = {k: v for k, v in os.environ.items() if k != "MODELOPT_PLUGINS"}  # conftest's
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0, r.stderr
    pages = json.loads(r.stdout)
    if sys.version_info[:2] != (3, 11):  # argparse words its help a little differently later
        pages.pop("cli.md")
    stale = [name for name, text in pages.items()
             if (ROOT / "docs" / "generated" / name).read_text() != text]
    assert not stale, f"docs/generated/{stale} out of date: run `make docs` and commit them"


def test_every_make_target_the_workflows_call_exists():
    targets = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))
    called = []
    for wf in (ROOT / ".github" / "workflows").glob("*.yml"):
        for job in yaml.safe_load(wf.read_text())["jobs"].values():
            for step in job.get("steps", []):
                called += re.findall(r"\bmake(?: -C \S+)? ([a-z][\w-]*)", step.get("run", ""))
    assert called and set(called) <= targets, set(called) - targets
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    runs = " ".join(s.get("run", "") for job in ci["jobs"].values() for s in job["steps"])
    assert {"make lint", "make test", "make docs"} <= {f"make {t}" for t in called} and all(
        f"make {t}" in runs for t in ("lint", "test", "docs"))


def test_every_subcommands_help_ends_with_an_example_that_parses():
    from modelopt.cli import parser
    from modelopt.cli_args import EXAMPLES

    p = parser()
    for name, example in EXAMPLES.items():
        r = subprocess.run([str(command_dir() / "modelopt"), name, "--help"],
                           capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.rstrip().endswith(example), name
        args = example.split("|")[0].split()[1:]
        assert p.parse_args(args).command == name  # the example is a valid command line


def test_counts_of_processes_are_checked_and_named_alike():
    """`--jobs 0` is refused (not read as the default); `time` takes the timing processes
    under the name `run` and `compare` give them, as well as its own."""
    from modelopt.cli import parser

    p = parser()
    for bad in (["run", "s.yaml", "--jobs", "0"], ["plan", "s.yaml", "--jobs", "-1"],
                ["time", "d", "--timing-processes", "2"]):
        with pytest.raises(SystemExit) as exit_:
            p.parse_args(bad)
        assert exit_.value.code == 2, bad
    assert p.parse_args(["time", "d", "--timing-processes", "4"]).processes == 4
    assert p.parse_args(["time", "d", "--processes", "5"]).processes == 5
    assert p.parse_args(["run", "s.yaml", "--jobs", "2"]).jobs == 2
