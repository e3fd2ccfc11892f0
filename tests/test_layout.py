"""The package's shape: imports flow one way, and modules and functions stay small.

spec (registries, suite schema, plugins) <- techniques <- run; results reads files only and
imports spec's schema at most, never techniques or run (so results of a user's own models and
datasets report without their code). techniques never import run or results.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "modelopt"
# package -> packages it must never import (at module level or inside a function)
FORBIDDEN = {
    "spec": ("modelopt.techniques", "modelopt.run", "modelopt.results"),
    "techniques": ("modelopt.run", "modelopt.results"),
    "results": ("modelopt.techniques", "modelopt.run"),
    "run": (),
}
# the training loop is one function a reader holds in their head, as nanoGPT's is
LONG_ALLOWED = {("run/train.py", "fit")}
MAX_FUNCTION_LINES, MAX_MODULE_LINES = 60, 400


def modules():
    return sorted(ROOT.rglob("*.py"))


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement names, with its line (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            out += [(node.lineno, f"{base}.{a.name}" if base == "modelopt" else base)
                    for a in node.names]
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package):
    bad = [f"{p.relative_to(ROOT)}:{line} imports {name}"
           for p in (ROOT / package).rglob("*.py") for line, name in imports(p)
           if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[package])]
    assert not bad, "\n".join(bad)


def test_the_direction_test_sees_function_level_imports(tmp_path):
    """The checker itself can fail: an import inside a function counts."""
    p = tmp_path / "modelopt" / "results" / "x.py"
    p.parent.mkdir(parents=True)
    p.write_text("def f():\n    from modelopt.run import timing\n    from ..techniques import data\n")
    global ROOT
    old, ROOT = ROOT, tmp_path / "modelopt"
    try:
        assert [n for _, n in imports(p)] == ["modelopt.run", "modelopt.techniques"]
    finally:
        ROOT = old


def test_modules_and_functions_stay_small():
    long_modules = [f"{p.relative_to(ROOT)}: {n} lines" for p in modules()
                    if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    long_functions = []
    for p in modules():
        rel = str(p.relative_to(ROOT))
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES and (rel, node.name) not in LONG_ALLOWED:
                    long_functions.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    assert not long_modules and not long_functions, "\n".join(long_modules + long_functions)
