"""A pytest plugin for the GPU device check: run only the tests that need CUDA, and fail on a skip.

`pytest -p device_pytest tests` (tools/ on PYTHONPATH) keeps the tests marked to skip
without CUDA (a skipif whose reason names CUDA or a GPU) and those named for cuda; on the
lent machine none of them may skip, except those that need more GPUs than one or a machine
without CUDA. A skip there means a CUDA path went unchecked, so it fails the session.
"""

from __future__ import annotations

import re

import pytest

NEEDS_GPU = re.compile(r"cuda|gpu", re.IGNORECASE)
# skips that are right on a machine with one GPU
ALLOWED_SKIP = re.compile(r"this machine has CUDA|needs (two|three|four|\d+) CUDA GPUs")

_skipped: list[tuple[str, str]] = []


def needs_cuda(item: pytest.Item) -> bool:
    reasons = [m.kwargs.get("reason", "") for m in item.iter_markers("skipif")]
    return any(NEEDS_GPU.search(r) for r in reasons) or "cuda" in item.name.lower()


def allowed_skip(reason: str) -> bool:
    return bool(ALLOWED_SKIP.search(reason))


def pytest_collection_modifyitems(config, items):
    keep = [i for i in items if needs_cuda(i)]
    config.hook.pytest_deselected(items=[i for i in items if not needs_cuda(i)])
    items[:] = keep


def pytest_runtest_logreport(report):
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not allowed_skip(reason):
            _skipped.append((report.nodeid, reason))


def pytest_sessionfinish(session, exitstatus):
    if session.testscollected == 0 or not session.items:
        print("\ndevice check: FAILED: no CUDA test was collected")
        session.exitstatus = 1
    elif _skipped:
        print(f"\ndevice check: FAILED: {len(_skipped)} CUDA test(s) skipped on the GPU machine:")
        for nodeid, reason in _skipped:
            print(f"  {nodeid}: {reason}")
        session.exitstatus = 1
