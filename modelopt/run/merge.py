"""Merging shard directories of one suite into one: their records (an ok one beats a
failed one), their saved models, and the runs none of them holds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from modelopt.results import latency, store
from modelopt.results.files import no_links, write_whole
from modelopt.results.metrics import RUN_META
from modelopt.run import changes
from modelopt.run.runner import ResumeError, RunLocked, being_written


def merge(dirs: list[str | Path], out_dir: str | Path) -> tuple[int, int, list[str]]:
    """Combine shard directories of one suite into `out_dir`; returns the records written,
    those left out because another directory has the same cell x seed (the first ok one is
    kept), and the suite's runs none of them holds (by suite.json; named). Refuses
    directories of different suites (name or content), one named twice, and no results."""
    seen = [Path(d).resolve() for d in dirs]
    twice = sorted({str(d) for d, p in zip(dirs, seen) if seen.count(p) > 1})
    if twice:
        raise ResumeError(f"{', '.join(twice)}: named twice; name each shard's directory once")
    metas = []
    for d in dirs:
        if not Path(d).is_dir():
            raise ResumeError(f"{d}: no such directory")
        meta = store.read_meta(d)
        if meta is None:
            raise ResumeError(f"{d}: no {RUN_META} here; is it a `modelopt run` output directory?")
        metas.append(meta.kept())
    if len({(m.get("suite"), m.get("content_hash")) for m in metas}) > 1 and (
            why := _unlike(dirs, metas)):
        raise ResumeError(why)
    for d in dirs:  # nothing is copied through a link to a file elsewhere
        no_links(d)
        held = being_written(Path(d))
        if held:  # its last records and models are still to come
            raise RunLocked(f"{d} is being written by a modelopt run ({held}); merge it "
                            "when that run has finished")
    records: dict = {}
    source: dict = {}  # the directory each kept record came from: its models come with it
    read = 0
    for d in dirs:
        if not store.results_path(d).exists():  # a shard that had no cells
            continue
        for rec in store.read(d, verbatim=True):  # copied as written; readers make it inert
            read += 1
            # an ok result beats a failed one for the same cell x seed
            if rec.key not in records or not records[rec.key].ok:
                records[rec.key], source[rec.key] = rec, d
    if not records:
        raise ResumeError(f"nothing to merge: no results in {', '.join(map(str, dirs))}")
    out = Path(out_dir)
    if out.is_symlink() and not out.exists() or out.exists() and not out.is_dir():
        raise ResumeError(f"{out} is not a directory; merge into a new (or empty) directory")
    if store.results_path(out).exists():
        raise ResumeError(f"{out} already holds results; merge into a new directory")
    if out.is_dir() and any(out.iterdir()):  # what is there (a planted link) is not written through
        raise ResumeError(f"{out} is not empty; merge into a new (or empty) directory")
    out.mkdir(parents=True, exist_ok=True)
    merged = {k: v for k, v in metas[0].items() if k != "shard"}  # the shards together
    write_whole(out / RUN_META, json.dumps(merged, indent=2).encode())
    for rec in records.values():
        store.append(out, rec)
    # the saved models come along; their latency is timed anew by `modelopt time`, since
    # shards timed on different machines cannot be paired
    for d in dirs:
        for p in latency.artifacts(d):
            if source.get((p.cell_id, p.seed)) is d:
                (out / latency.MODELS_DIR).mkdir(exist_ok=True)
                shutil.copy2(p.path, out / latency.MODELS_DIR / p.path.name)
    return len(records), read - len(records), _missing(metas[0], records)


def _unlike(dirs: list, metas: list[dict]) -> str:
    """Why shard directories of different content hashes cannot be merged: their suites'
    names and hashes, and what differs from the first (where their suite.json keep the
    identity to tell); "" where nothing does (the same cells in another order)."""
    listing = "; ".join(f"{d}: {m.get('suite')} ({m.get('content_hash')})"
                        for d, m in zip(dirs, metas))
    first = metas[0]
    if len({m.get("suite") for m in metas}) == 1 and all("cells" in m for m in metas) and not any(
            changes.between(first, m, {}) for m in metas[1:]):
        return ""
    configs = {r.cell_id: r.cell for d in dirs if store.results_path(d).exists()
               for r in store.read(d)}
    by: dict[str, list[str]] = {}  # what differs -> the shards it differs in (said once)
    for d, m in zip(dirs[1:], metas[1:]):
        if m.get("suite") == first.get("suite") and "cells" in m and "cells" in first:
            said = "; ".join(changes.between(first, m, configs, f"of {dirs[0]}"))
            if said:
                by.setdefault(said, []).append(str(d))
    words = [f"{', '.join(ds)} against {dirs[0]}: {said}" for said, ds in by.items()]
    return (f"cannot merge results of different suites: {listing}"
            + (". " + ". ".join(words) if words else ""))


def _missing(meta: dict, records: dict) -> list[str]:
    """The runs (cell x seed) of the suite, as suite.json lists them, without a record."""
    if "cells" not in meta:  # written by an older modelopt: no list to check against
        return []
    gone = [(c, s) for c in meta["cells"] for s in meta.get("seeds") or [] if (c, s) not in records]
    named = meta.get("labels") or {}
    return [f"{named.get(c) or c[:8]} seed {s}" for c, s in gone]
