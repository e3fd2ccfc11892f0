"""What differs between the suite a results directory was run with and the suite now, in
words: resume refuses a changed suite, and a bare pair of content hashes leaves the user to
guess whether a cell, a seed, a data file or their plugin code moved."""

from __future__ import annotations

from pathlib import Path

from modelopt.results import store
from modelopt.results.labels import names
from modelopt.results.store import RunMeta
from modelopt.spec import data_files
from modelopt.spec.schema import Suite

_SHOWN = 3  # cells named per change; the count says how many more


def identity(suite: Suite) -> dict:
    """What suite.json keeps of a run's identity (its cells, seeds, what each cell read and
    its label), so that a later refusal can say what changed, and `merge` what is missing."""
    return {"cells": [c.cell_id for c in suite.cells], "seeds": list(suite.seeds),
            "inputs": {cid: dict(i) for cid, i in suite.inputs.items()},
            "labels": names({c.cell_id: c.as_config() for c in suite.cells})}


def since(out_dir: str | Path, meta: RunMeta, suite: Suite) -> list[str]:
    """Each difference between the run in `out_dir` (its suite.json, or its records where
    an older suite.json kept no identity) and `suite`, as a phrase."""
    old = _old_identity(out_dir, meta)
    configs = {cid: cfg for cid, cfg in old["configs"].items() if cfg}
    configs.update({c.cell_id: c.as_config() for c in suite.cells})
    return between(old, identity(suite), configs, old["where"])


def between(old: dict, new: dict, configs: dict[str, dict], where: str = "run there"
            ) -> list[str]:
    """Each difference between two identities (`identity`'s), as a phrase; `configs`: the
    cells' resolved configs where known, to name them and their files."""
    named = {**(old.get("labels") or {}), **(new.get("labels") or {}),
             **names({cid: cfg for cid, cfg in configs.items() if cfg})}
    now, out = new["cells"], []
    added = [cid for cid in now if cid not in old["cells"]]
    gone = [cid for cid in old["cells"] if cid not in now]
    if added:
        out.append(f"{len(added)} cell(s) new ({_listed(added, named)})")
    if gone:
        out.append(f"{len(gone)} cell(s) {where} no longer in the suite "
                   f"({_listed(gone, named)})")
    if old["seeds"] and sorted(old["seeds"]) != sorted(new["seeds"]):
        out.append(f"seeds {sorted(old['seeds'])} → {sorted(new['seeds'])}")
    common = [c for c in now if c in old["cells"]]
    return out + _inputs(old["inputs"], new["inputs"], common, named, configs)


def _old_identity(out_dir: str | Path, meta: RunMeta) -> dict:
    """The old run's cells, seeds, inputs and configs: suite.json's identity where it has
    one; else read from the records (cells that never ran there are not known)."""
    path = store.results_path(out_dir)
    recs = store.read(path) if path.exists() else []
    configs = {r.cell_id: r.cell for r in recs}
    kept = meta.kept()
    if "cells" in kept:
        return {"cells": kept["cells"], "seeds": kept.get("seeds") or [],
                "inputs": kept.get("inputs") or {}, "configs": configs, "where": "run there"}
    inputs = {r.cell_id: {k: r.extra[k] for k in ("data_files", "code") if k in r.extra}
              for r in recs}  # the latest record of a cell is last in the file
    return {"cells": list(configs), "seeds": sorted({r.seed for r in recs}),
            "inputs": inputs, "configs": configs, "where": "with results there"}


def _inputs(old: dict, new: dict, common: list[str], named: dict[str, str],
            configs: dict[str, dict]) -> list[str]:
    """The data files and plugin code of cells in both runs that read other inputs now."""
    changed: dict[str, list[str]] = {}
    for cid in common:
        before, now = old.get(cid) or {}, new.get(cid) or {}
        words = data_files.changes(before.get("data_files") or {}, now.get("data_files") or {},
                                   before.get("code"), now.get("code"),
                                   (configs.get(cid) or {}).get("dataset") or {}, lead="data ")
        if words:
            changed.setdefault("; ".join(words), []).append(cid)
    return [f"{words} for {len(cids)} cell(s) ({_listed(cids, named)})"
            for words, cids in changed.items()]


def _listed(cids: list[str], named: dict[str, str]) -> str:
    shown = [named.get(cid) or cid[:8] for cid in cids[:_SHOWN]]
    return "; ".join(shown) + (f"; and {len(cids) - _SHOWN} more" if len(cids) > _SHOWN else "")
