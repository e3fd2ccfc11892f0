"""Argument types of the `modelopt` command line (argparse `type=` callables)."""

from __future__ import annotations

import argparse


def shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes I/N (e.g. 2/3), got {text!r}") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"--shard {text}: I must be in 1..N")
    return i, n


def replicates(text: str) -> int:
    """Timing processes are the replicates of a latency interval: three at least."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 3:
        raise argparse.ArgumentTypeError(f"needs an integer >= 3 (the timing processes are "
                                         f"the replicates of an interval), got {text!r}")
    return n
