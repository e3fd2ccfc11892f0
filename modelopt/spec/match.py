"""Whether a cell's setting, as resolved or recorded, holds what a suite writes about it.

One rule for every place a suite names cells by some of their settings (`baseline:`,
`expect_failure:`, `exclude:`): only what is written is compared, so `model: cnn` names
every cnn, whatever its channels. Imports nothing: results/ reads records with it, without
the registries."""

from __future__ import annotations

import json
from pathlib import PurePath

OFF_WORDS = (None, "none", "off", [])


def within(want, have) -> bool:
    """`want` as a suite writes it against `have` as a cell holds it: a technique off
    (`none`) where the cell has none; a name where the cell's spec has that name; every key
    a mapping gives (a key the cell lacks counts as off); a list item by item; a file path
    where the cell holds the file as resolved ({path, sha256, ...}: by its hash where the
    suite's file was checked too, else by the path's last parts or the source's name); a
    number written as text (YAML reads `1e-2` as text) as the number."""
    if want in OFF_WORDS:
        return not have
    if isinstance(have, dict) and "sha256" in have:  # a file, resolved
        if isinstance(want, dict) and "sha256" in want:  # a file checked too: its content
            return all(within(v, have.get(k)) for k, v in want.items() if k != "path")
        if isinstance(want, str):  # as written (a results directory of an older run)
            return want == have.get("name") or _same_file(want, have.get("path"))
        if isinstance(want, dict):
            return all(_same_file(v, have.get("path")) if k == "path" else within(v, have.get(k))
                       for k, v in want.items())
    if isinstance(want, str) and isinstance(have, dict):
        want = {"name": want}
    if isinstance(want, dict):
        return isinstance(have, dict) and all(within(v, have.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return (isinstance(have, list) and len(want) == len(have)
                and all(within(w, h) for w, h in zip(want, have)))
    if isinstance(want, str) and isinstance(have, (int, float)) and not isinstance(have, bool):
        try:
            return float(want) == have
        except ValueError:
            return False
    return want == have


def _same_file(written: str, resolved) -> bool:
    """A file a suite names relative to its folder, against the absolute path a cell
    resolved it to: the written path's parts (after any leading `..`) end the resolved one."""
    tail = PurePath(written).parts
    while tail and tail[0] == "..":
        tail = tail[1:]
    return bool(tail) and PurePath(str(resolved)).parts[-len(tail):] == tail


def config_value(config: dict, key: str):
    """A resolved cell's setting at a (possibly dotted) key; None where it has none (a
    technique left off: `deploy: eager` is no deploy key)."""
    have: object = config
    for part in key.split("."):
        if not isinstance(have, dict):
            return None
        have = have.get(part)
    return have


def config_matches(config: dict, pattern: dict) -> bool:
    """Whether a resolved cell config holds every (normalized, possibly dotted) axis value
    of `pattern` (within)."""
    return all(within(want, config_value(config, key)) for key, want in pattern.items())


def rest(config: dict, keys) -> str:
    """A cell's settings but `keys` (a dotted one: that parameter of its technique), as
    one string: the cells a baseline cell is compared with are those of its rest."""
    out = dict(config)
    for key in keys:
        head, _, param = key.partition(".")
        if not param:
            out.pop(head, None)
        elif isinstance(out.get(head), dict):
            out[head] = {k: v for k, v in out[head].items() if k != param}
    return json.dumps(out, sort_keys=True, default=str)
