"""pydantic's errors about a suite file, said as the suite's: the key, what is allowed and
the closest name."""

from __future__ import annotations

from pydantic import ValidationError

from modelopt.spec.keys import KEYS
from modelopt.spec.registry import closest
from modelopt.spec.schema import CVConfig, ExpectedFailure, SuiteFile, TrainConfig

CELL_KEYS = frozenset(k.name for k in KEYS)


def telling(errors: list[dict]) -> dict:
    """The error to say: an unknown key before all else (`cv: {fold: 3}` is a typo of
    `folds`, more than `folds` missing)."""
    return next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])


def where(err: ValidationError) -> tuple[str, str]:
    """The key of a suite file's schema error, and what to say of it."""
    first = telling(err.errors())
    key = ".".join(str(p) for p in first["loc"])
    msg = said(first, "")
    if first["type"] == "extra_forbidden":
        # the keys of the part it is in: an expect_failure entry's, cv's, or the top level's
        fields = {"expect_failure": ExpectedFailure, "cv": CVConfig}.get(
            first["loc"][0], SuiteFile).model_fields if len(first["loc"]) > 1 else SuiteFile.model_fields
        msg = f"unknown key{closest(first['loc'][-1], fields)}; allowed: {', '.join(fields)}"
        if len(first["loc"]) == 1 and first["loc"][0] in CELL_KEYS:
            msg = (f"unknown key at the top level: `{key}` is a cell's key, set under "
                   f"`defaults:` (every cell: `defaults: {{{key}: ...}}`), or under `matrix:` "
                   "as a list of values to compare, or in an `include:` entry")
    return key, msg


def said(error: dict, model: str) -> str:
    """pydantic's message, with the allowed keys (and the closest) for an unknown one."""
    fields = {"TrainConfig": TrainConfig, "CVConfig": CVConfig}.get(model)
    if error["type"] == "value_error":  # a validator's own words, without "Value error, "
        return str(error.get("ctx", {}).get("error") or error["msg"])
    if error["type"] != "extra_forbidden" or fields is None:
        return error["msg"]
    key = error["loc"][-1]
    top = f" (`{key}` is a key of the suite's top level)" if key in SuiteFile.model_fields else ""
    written = [name for name, f in fields.model_fields.items()  # not what `cv:` sets
               if not (f.json_schema_extra or {}).get("set_by")]
    return f"unknown key '{key}'{closest(key, written)}{top}; allowed: {', '.join(written)}"
