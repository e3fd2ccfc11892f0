"""One side of a comparison, read from a results directory or a pytest-benchmark JSON file:
per cell and seed, its status and figures, as data (nothing in it runs)."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from modelopt.results import metrics as M
from modelopt.results import store
from modelopt.results.files import inert
from modelopt.results.labels import file_label
from modelopt.results.record import Record
from modelopt.spec import data_files, outcomes


class CompareError(ValueError):
    """Input that cannot be compared (missing file, corrupt line, different suites)."""


# the flags records looked for before they named them (cpu_flags_checked)
EARLIER_CHECKED = frozenset(("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16"))


# what a record's env names that moves speed figures besides the CPU, as the note says it
STACK = {"torch": "torch", "torchao": "torchao", "cpu_count": "cores"}


@dataclass(frozen=True)
class Machine:
    """A CPU as a record names it: its model, the instruction-set flags it has, and the flags
    that were looked for (a flag outside them is unknown, not absent)."""
    cpu: str
    flags: frozenset[str]
    checked: frozenset[str]

    @classmethod
    def of(cls, env: dict) -> Machine:
        if "cpu_flags" not in env:  # written before records had flags, or none could be read
            checked = frozenset()
        else:
            given = env.get("cpu_flags_checked")
            checked = frozenset(given.split()) if given else EARLIER_CHECKED
        return cls(env["cpu"], frozenset((env.get("cpu_flags") or "").split()), checked)

    def seen(self, checked: frozenset[str]) -> str:
        """The CPU told by the flags `checked` alone, as a report names it."""
        flags = " ".join(sorted(self.flags & checked))
        return self.cpu + (f" ({flags})" if flags else "")


@dataclass
class Side:
    """One side of a comparison: per cell, per seed, its status and figures."""
    suite: str | None
    status: dict[str, dict[int, tuple[str, str]]] = field(default_factory=dict)
    figures: dict[str, dict[int, dict]] = field(default_factory=dict)
    configs: dict[str, dict] = field(default_factory=dict)
    run_dir: Path | None = None  # a results directory (its saved models can be re-timed)
    # per cell, per seed: the trained network's key; cells that share one trained network
    # share its training figures, which are then one observation, not one per cell
    train_keys: dict[str, dict[int, str]] = field(default_factory=dict)
    machines: set[Machine] = field(default_factory=set)  # the CPUs its records were made on
    # what else its records ran with that moves speed figures: torch, torchao, cores
    stack: dict[str, set[str]] = field(default_factory=dict)
    # per cell: the fingerprints of the files its data was read from (spec/data_files.py)
    data_files: dict[str, dict[str, str]] = field(default_factory=dict)
    code: dict[str, str] = field(default_factory=dict)  # per cell: your code's hash
    # a cell compared under the other side's id (it differs only in its trained weights):
    # that id -> its id in this side's own files (its saved models)
    own: dict[str, str] = field(default_factory=dict)
    # per cell, per seed: how each test sample went (spec/outcomes.py), read once: a figure
    # the seeds cannot test is tested on the samples
    outcomes: dict[str, dict[int, outcomes.Outcomes]] = field(default_factory=dict)
    # the cells its suite.json says the run set out to run (None: not said, e.g. a
    # pytest-benchmark JSON): a cell listed there and absent from its results was not run
    planned: frozenset[str] | None = None


    def ok_seeds(self, cid: str) -> set[int]:
        return {s for s, (st, _) in self.status.get(cid, {}).items() if st == "ok"}


def declare_side(path: str | Path) -> dict[str, str]:
    """Declare the figures a side's run declared (a task's, a measure's: a results
    directory's suite.json, or the `modelopt` block `pytest benchmarks/` writes into its
    JSON), so they are judged and may be named in thresholds; returns its suite's
    thresholds."""
    p = Path(path)
    if p.is_file() and p.suffix == ".json":
        return _declared(_benchmark_doc(p), p)
    try:
        meta = store.declare_run(p)
    except store.ResultsError as exc:
        raise CompareError(str(exc)) from None
    return dict(meta.thresholds) if meta else {}


def _declared(doc: dict, p: Path) -> dict[str, str]:
    """A pytest-benchmark JSON's `modelopt` block declared; its suite's thresholds."""
    block = doc.get("modelopt") or {}
    shapes = {"metrics": list, "tasks": dict, "thresholds": dict, "untimed": list}
    wrong = [k for k, kind in shapes.items() if not isinstance(block.get(k) or kind(), kind)] \
        if isinstance(block, dict) else ["modelopt"]
    if wrong == ["modelopt"]:
        raise CompareError(f"{p}: its modelopt block is not a mapping, as modelopt writes it")
    if wrong:
        raise CompareError(f"{p}: its modelopt block's {wrong[0]} are not a "
                           f"{'list' if shapes[wrong[0]] is list else 'mapping'}")
    try:
        store.declare_figures(block.get("metrics") or [], block.get("tasks") or {}, str(p))
    except store.ResultsError as exc:
        raise CompareError(str(exc)) from None
    thresholds = block.get("thresholds") or {}
    return dict(thresholds)


def load_side(path: str | Path) -> Side:
    p = Path(path)
    if p.is_file() and p.suffix == ".json":
        return _load_benchmark_json(p)
    try:
        meta = store.declare_run(p)
        recs = [r.model_dump() for r in store.read(p)]
    except store.ResultsError as exc:
        raise CompareError(str(exc)) from None
    suites = {r.get("suite") for r in recs}
    if len(suites) > 1:
        raise CompareError(f"{p}: holds several suites ({', '.join(map(str, suites))}); "
                           "compare one at a time")
    side = _collect(recs, suites.pop() if suites else None)
    side.run_dir = p if p.is_dir() else p.parent
    if meta is not None and meta.cells is not None and meta.shard is None:  # a shard: a share
        side.planned = frozenset(meta.cells)
    return side


def _benchmark_doc(p: Path) -> dict:
    try:
        doc = inert(json.loads(p.read_text()))
        if not isinstance(doc, dict) or not isinstance(doc["benchmarks"], list):
            raise TypeError("no list of benchmarks")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise CompareError(f"{p}: not a pytest-benchmark JSON file ({exc})") from None
    return doc


def _load_benchmark_json(p: Path) -> Side:
    doc = _benchmark_doc(p)  # read once: its figures declared, then its benchmarks
    _declared(doc, p)
    recs, suites = [], set()
    for i, b in enumerate(doc["benchmarks"]):
        info = b.get("extra_info") if isinstance(b, dict) else None
        if not isinstance(info, dict) or "cell_id" not in info:
            name = b.get("name") if isinstance(b, dict) else b
            raise CompareError(f"{p}: benchmark {i} ({str(name)[:80]}) has no modelopt extra_info")
        suite = str(b.get("group") or "").split(":")[0]
        suites.add(suite)
        figures = {k: v for k, v in info.items() if k not in ("cell_id", "seed", "status", "cell",
                                                              "error", "extra")}
        recs.append(_record(p, f"benchmark {i} ({str(b.get('name'))[:80]})", {
            "suite": suite or "benchmarks", "cell_id": info["cell_id"],
            "seed": info.get("seed", 0), "status": info.get("status", "ok"),
            "error": info.get("error"), "metrics": figures, "cell": info.get("cell"),
            "extra": info.get("extra") or {}}))
    block = doc.get("modelopt") or {}
    untimed = block.get("untimed") or []  # diverged or failed: run, never benchmarked
    if not all(isinstance(u, dict) for u in untimed):  # a list: `_declared` checked it
        raise CompareError(f"{p}: its modelopt block's untimed cells are not a list of cells")
    for i, u in enumerate(untimed):
        if u.get("status") == "ok":  # it would hide the benchmarked cell of that name
            raise CompareError(f"{p}: untimed cell {i} says ok; a cell that finished ok is "
                               "among the benchmarks, not its modelopt block's untimed cells")
        recs.append(_record(p, f"untimed cell {i}", {
            "suite": str(block.get("suite") or "benchmarks"), "cell_id": u.get("cell_id"),
            "seed": u.get("seed", 0), "status": u.get("status"), "error": u.get("error"),
            "cell": u.get("cell"), "extra": u.get("extra") or {}}))
    if len(suites) > 1:  # as a results directory of two suites is refused
        raise CompareError(f"{p}: holds benchmarks of several suites ({', '.join(sorted(suites))})"
                           "; compare one suite's run at a time")
    twice = [k for k, n in Counter((r["cell_id"], r["seed"]) for r in recs).items() if n > 1]
    if twice:  # the later one silently won
        raise CompareError(f"{p}: cell {twice[0][0]} seed {twice[0][1]} appears twice; one "
                           "result per cell and seed")
    return _collect(recs, suites.pop() if suites else None)


def _record(p: Path, what: str, rec: dict) -> dict:
    """A result read from a pytest-benchmark JSON, checked as a results.jsonl line is: data
    from elsewhere."""
    try:
        return Record.model_validate(rec, context={"from_file": True}).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CompareError(f"{p}: {what} is not a result record "
                           f"({'.'.join(map(str, first['loc']))}: {first['msg']})") from None


def _collect(recs: list[dict], suite: str | None) -> Side:
    side = Side(suite)
    for r in recs:
        cid, seed = r["cell_id"], r["seed"]
        error = (r.get("error") or "").splitlines()[0] if r.get("error") else ""
        side.status.setdefault(cid, {})[seed] = (r.get("status") or "failed", error)
        side.configs.setdefault(cid, r.get("cell") or {})
        env = r.get("env") or {}
        if env.get("cpu"):
            side.machines.add(Machine.of(env))
        for key in STACK:
            if env.get(key) is not None:
                side.stack.setdefault(key, set()).add(str(env[key])[:40])
        key = (r.get("extra") or {}).get("train_key")
        if isinstance(key, str):
            side.train_keys.setdefault(cid, {})[seed] = key
        files = (r.get("extra") or {}).get("data_files")
        if isinstance(files, dict):  # words to show, read from a file: strings only, short
            side.data_files.setdefault(cid, {str(k)[:40]: str(v)[:80] for k, v in files.items()})
        code = (r.get("extra") or {}).get("code")
        if isinstance(code, str):
            side.code.setdefault(cid, code[:40])
        if r.get("status") == "ok":
            side.figures.setdefault(cid, {})[seed] = _figures(cid, seed, r.get("metrics") or {})
            each = outcomes.Outcomes.read((r.get("extra") or {}).get(outcomes.KEY))
            if each is not None:
                side.outcomes.setdefault(cid, {})[seed] = each
    return side


def _figures(cid: str, seed: int, metrics: dict) -> dict[str, float]:
    """The numeric figures of a record; a NaN, an infinity or a word where a number is
    declared is an error naming the cell and figure (never a silently skipped comparison)."""
    out = {}
    for k, v in metrics.items():
        numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
        declared = M.TABLE.get(k)
        if numeric and math.isfinite(v):
            out[k] = float(v)
        elif numeric or (declared is not None and declared.gated and v is not None):
            raise CompareError(f"cell {cid} seed {seed}: figure '{k}' is {v!r}, not a finite "
                               "number")
    return out


def pair_retrained(base: Side, cur: Side) -> None:
    """Pair each current cell with the baseline's cell that differs from it only in the
    trained weights it loaded (their file's sha256 is part of a cell's id, so a retrained
    model.pth is another cell): the gate's question is what the new weights changed. The
    current side then names it by the baseline's id; `data_note` says the weights differ."""
    def alone(side: Side, other: Side) -> dict:  # key -> its cells found on one side only
        out: dict = {}
        for c in side.status:
            if c not in other.status and side.configs.get(c):
                out.setdefault(_but_weights(side.configs[c]), []).append(c)
        return out

    theirs = alone(base, cur)
    for key, mine in alone(cur, base).items():
        if len(mine) != 1 or len(theirs.get(key, ())) != 1:
            continue  # two models of other weights each: which is which is not known
        cid, to = mine[0], theirs[key][0]
        for table in (cur.status, cur.figures, cur.configs, cur.train_keys, cur.data_files,
                      cur.code, cur.outcomes):
            if cid in table:
                table[to] = table.pop(cid)
        cur.own[to] = cid


def _but_weights(config):
    """A cell's config, hashable, with the trained weights it names (any model's, a KD
    teacher's) reduced to their presence."""
    if isinstance(config, dict):
        return tuple(sorted((k, "weights" if k == "weights" and isinstance(v, dict)
                             else _but_weights(v)) for k, v in config.items()))
    if isinstance(config, list):
        return tuple(_but_weights(v) for v in config)
    return config


def weights_of(config) -> list[str]:
    """The trained weights files a cell's config names, as `file@sha256[:8]`."""
    if isinstance(config, list):
        return [w for v in config for w in weights_of(v)]
    if not isinstance(config, dict):
        return []
    w = config.get("weights")
    own = [file_label(w)] if isinstance(w, dict) else []
    return own + [x for k, v in config.items() if k != "weights" for x in weights_of(v)]


def data_note(base: Side, cur: Side, common: list[str], labels: dict[str, str]) -> str:
    """Cells whose two runs read different files (a CSV edited, images added) or ran other
    code of yours (a plugin edited): their figures compare those too."""
    changed: dict[str, list[str]] = {}
    for cid in common:
        words = data_files.changes(base.data_files.get(cid, {}), cur.data_files.get(cid, {}),
                                   base.code.get(cid), cur.code.get(cid),
                                   (cur.configs.get(cid) or {}).get("dataset") or {}, sep=":")
        weights = [weights_of(side.configs.get(cid)) for side in (base, cur)]
        if weights[0] != weights[1]:
            words.append(f"trained weights {', '.join(weights[0]) or '–'} → "
                         f"{', '.join(weights[1]) or '–'}")
        if words:
            changed.setdefault("; ".join(words), []).append(labels.get(cid, cid[:8]))
    return " ".join(f"The two runs read different inputs for {len(cells)} cell(s) "
                    f"({'; '.join(cells[:3])}{' ...' if len(cells) > 3 else ''}): {words}; "
                    "their figures compare those as well as modelopt's code."
                    for words, cells in changed.items())


def machines_note(base: Side, cur: Side) -> str:
    """A baseline taken on another CPU (model or int8 / half instruction sets) compares
    machines as much as code: latency, training speed and int8's gains move with them. Flags
    are compared where every record looked for them (older records looked for fewer)."""
    stack = [f"{said} {', '.join(sorted(base.stack[k]))} → {', '.join(sorted(cur.stack[k]))}"
             for k, said in STACK.items() if base.stack.get(k) and cur.stack.get(k)
             and base.stack[k] != cur.stack[k]]
    stack_note = (f"The two runs ran on other software or cores ({'; '.join(stack)}): speed "
                  "figures compare those too." if stack else "")
    if not base.machines or not cur.machines:
        return stack_note
    checked = frozenset.intersection(*(m.checked for m in base.machines | cur.machines))
    names = [sorted({m.seen(checked) for m in side.machines}) for side in (base, cur)]
    if names[0] == names[1]:
        return stack_note
    names = ["; ".join(side) for side in names]
    return (f"The baseline was made on another CPU ({names[0]}) than the current run "
            f"({names[1]}): speed figures compare the machines too, and the gains of int8 and "
            "half precision depend on the instruction sets named." + f" {stack_note}" * bool(stack))
