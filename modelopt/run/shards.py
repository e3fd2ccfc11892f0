"""`--shard I/N`: which of a suite's runs (cell x seed) shard I of N runs.

Every machine computes the same split from the suite alone. Runs that train the same network
(train once: cells that differ only after training, with the same seed) stay in one shard,
so no two shards train it. Groups go, largest first, to the shard with the fewest runs so far:
shards differ by at most one group's size, and none is empty while there are at least as
many groups as shards. Seeds of one cell may go to different shards (`merge` joins them).
"""

from __future__ import annotations

from modelopt.run import dense
from modelopt.spec.cell import Cell
from modelopt.spec.schema import Suite

Shard = tuple[int, int]  # (I, N), 1 <= I <= N


def runs_of(suite: Suite, shard: Shard | None) -> list[tuple[Cell, int]]:
    """The (cell, seed) runs of `shard`, in the suite's order; every run without one."""
    runs = suite.runs()
    if shard is None:
        return runs
    index, n = shard
    groups: dict[str, list[tuple[str, int]]] = {}
    for cell, seed in runs:
        groups.setdefault(dense.key(cell, seed), []).append((cell.cell_id, seed))
    # ordered by what every machine agrees on (the key hashes modelopt's source too)
    ordered = sorted(groups.values(), key=lambda g: (-len(g), min(g)))
    load, mine = [0] * n, set()
    for group in ordered:
        j = min(range(n), key=lambda k: (load[k], k))
        load[j] += len(group)
        if j == index - 1:
            mine.update(group)
    return [(cell, seed) for cell, seed in runs if (cell.cell_id, seed) in mine]


def keys_of(suite: Suite, shard: Shard | None) -> set[tuple[str, int]]:
    """The (cell_id, seed) pairs of `shard`."""
    return {(cell.cell_id, seed) for cell, seed in runs_of(suite, shard)}


def empty_note(suite: Suite, shard: Shard) -> str:
    """Why a shard has nothing to run: fewer groups of runs than shards."""
    groups = len({dense.key(cell, seed) for cell, seed in suite.runs()})
    return (f"shard {shard[0]}/{shard[1]} holds none of the suite's {len(suite.runs())} runs: "
            f"they form {groups} group(s) that train one network each, and a group is never "
            f"split; use at most {groups} shard(s)")
