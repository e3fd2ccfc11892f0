"""A suite's partial descriptions of cells, checked when it loads: `baseline:` and each
`expect_failure:` entry name cells by some of their settings (spec/match.py says how a
setting matches). Each is checked as a matrix value is (a misspelt technique or parameter is
refused with its name), a model's trained `weights:` become the file's identity (its hash:
a cell is named by what it loads, whichever path or link reaches the file), and one that
matches no cell is refused, saying which setting no cell has."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from modelopt.spec import keys as K
from modelopt.spec.cell import Cell
from modelopt.spec.cells import _normalize_axis_value, check_spec
from modelopt.spec.match import config_matches, config_value, rest, within
from modelopt.spec.registry import closest
from modelopt.spec.schema import SuiteError, SuiteFile

Guard = Callable[..., Any]  # suite._Guard: a check whose errors name where the value was written


def expected_failures(spec: SuiteFile, cells: list[Cell], guard: Guard, regs
                      ) -> tuple[tuple[str, str], ...]:
    """(cell_id, reason) of every cell an expect_failure entry matches (the first entry
    that matches gives the reason)."""
    out: dict[str, str] = {}
    configs = [c.as_config() for c in cells]
    for i, entry in enumerate(spec.expect_failure):
        where = f"expect_failure[{i}].cell"
        for j in matched(where, pattern(where, entry.cell, guard, regs), guard, configs):
            out.setdefault(cells[j].cell_id, entry.reason)
    return tuple(out.items())


def baseline(spec: SuiteFile, cells: list[Cell], guard: Guard, regs) -> dict | None:
    """The suite's `baseline:`, checked and resolved (what its results directory keeps, and
    the report matches records against); None where it names none."""
    if not spec.baseline:
        return None
    want = pattern("baseline", spec.baseline, guard, regs)
    configs = [c.as_config() for c in cells]
    _one_each(want, guard, [configs[i] for i in matched("baseline", want, guard, configs)])
    return want


def _one_each(want: dict, guard: Guard, hits: list[dict]) -> None:
    """Each cell is compared with the baseline cell equal to it on every key the baseline
    does not name (match.rest, as the report pairs them): two it matches that differ only in
    keys it names leave every cell like them with none (their relative columns empty,
    found after the whole run): refused."""
    alike: dict[str, dict] = {}
    for config in hits:
        first = alike.setdefault(rest(config, want), config)
        if first is config:
            continue
        apart = {k: _differing(config_value(first, k), config_value(config, k)) for k in want
                 if config_value(first, k) != config_value(config, k)}
        said = "; ".join(f"{k}: {a} and {b}" for k, (a, b) in apart.items())
        key, (one, _) = next(iter(apart.items()))
        raise SuiteError(guard.path, "baseline", (
            f"matches two cells alike ({said}): each cell is compared with the baseline cell "
            "equal to it on every key the baseline does not name, so no cell like these has "
            "one. Name instead the keys the cells to compare differ in (as `baseline: "
            f"{{quantize: none}}`), or pick one cell for all ({key}: {one})"))


def _differing(a: Any, b: Any) -> tuple[str, str]:
    """Two settings of one technique as a suite writes them, by the parameters they differ
    in: `{name: cnn, channels: 8}`."""
    if isinstance(a, dict) and isinstance(b, dict) and a.get("name") == b.get("name"):
        keys = ["name"] + [k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
        a, b = {k: a.get(k) for k in keys}, {k: b.get(k) for k in keys}
    return _flow(a), _flow(b)


def _flow(value: Any) -> str:
    """A setting in YAML's flow style, as a suite file would hold it."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if value is None or isinstance(value, bool):
        return str(value).lower()  # none, true, false
    return str(value)


def matched(where: str, want: dict, guard: Guard, configs: list[dict]) -> list[int]:
    """The indices of the configs a checked pattern matches; refused where no cell holds
    all of it."""
    hits = [i for i, c in enumerate(configs) if config_matches(c, want)]
    if not hits:
        raise SuiteError(guard.path, where, _no_match(want, configs))
    return hits


def parameters_only(key: str, value) -> bool:
    """Some parameters of a technique with no name (`model: {width: 16}`): any name's."""
    return key in K.SINGLE and isinstance(value, dict) and "name" not in value


def pattern(where: str, written: dict, guard: Guard, regs) -> dict:
    """`written` checked as matrix values are, trained weights as the file's identity."""
    out = {}
    for key, value in written.items():
        if parameters_only(key, value):
            out[key] = value
            continue
        norm = guard(f"{where}.{key}", _normalize_axis_value, key, value)
        if "." not in key:
            norm = _identity(norm, guard(f"{where}.{key}", check_spec, key, norm, regs))
        out[key] = norm
    return out


def _identity(written: Any, checked: Any) -> Any:
    """A written spec whose `weights:` name a file: the file's identity instead ({path,
    sha256} and the source's settings written), as every cell that loads it holds."""
    if not (isinstance(written, dict) and written.get("weights") and isinstance(checked, dict)
            and isinstance(checked.get("weights"), dict)):
        return written
    file = checked["weights"]
    given = written["weights"] if isinstance(written["weights"], dict) else {}
    return {**written, "weights": {"path": file["path"], "sha256": file["sha256"],
                                   **{k: file[k] for k in given if k in file and k != "path"}}}


def _no_match(want: dict, configs: list[dict]) -> str:
    """Why a pattern matches no cell: its first setting no cell has, and the values the
    cells have there."""
    def asked(part, have):  # of a cell's setting, the parts the pattern gives
        if isinstance(part, dict) and isinstance(have, dict):
            return {k: have[k] for k in part if k in have}
        return have

    def said(key, value):  # as the suite writes it: a cell without a deploy is `eager`
        return K.IMPLIED[key] if value is None and key in K.IMPLIED else short(value)

    for key, part in want.items():
        if not any(within(part, config_value(c, key)) for c in configs):
            seen = sorted({said(key, asked(part, config_value(c, key))) for c in configs})
            parent = config_value(configs[0], key.rpartition(".")[0]) if "." in key else None
            if seen == ["none"] and isinstance(parent, dict):  # a setting no cell has at all
                return (f"matches no cell of the suite: no cell has a setting {key}"
                        f"{closest(key.rpartition('.')[2], parent)}")
            return (f"matches no cell of the suite: no cell has {key}={said(key, part)}; the "
                    f"cells have {', '.join(seen[:8])}{' ...' if len(seen) > 8 else ''}")
    return "matches no cell of the suite: no cell has all of its settings at once"


def short(value: Any) -> str:
    """A setting in a few words: `cnn(channels=16)`, `l1+l2`, a file as `name.pth@1a2b3c4d`."""
    if value is None:
        return "none"
    if isinstance(value, dict) and "sha256" in value and "path" in value:
        return f"{Path(str(value['path'])).name}@{str(value['sha256'])[:8]}"
    if isinstance(value, dict) and "name" in value:
        params = ",".join(f"{k}={short(v) if isinstance(v, dict) else v}"
                          for k, v in value.items() if k != "name")
        return f"{value['name']}({params})" if params else value["name"]
    if isinstance(value, list):
        return "+".join(short(v) for v in value) or "none"
    return str(value)
