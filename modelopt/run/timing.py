"""Paired, interleaved latency: every saved model of a run timed side by side.

Timing each model in its own process mixes the model's speed with the process's and the
minute's: the same model varies by 20-40 % between processes here, while two models of one
architecture timed in interleaved, shuffled rounds of one process read within 3 % of each
other (0.2 % for two 64-channel cnns). So a run
saves each cell x seed's deployable model, and this stage loads all of them into each of K
fresh processes (one after another, nothing else running) and times them round by round.
Ratios against a baseline are taken within a process; the K processes are the replicates
(docs/explanation/measurement.md).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

from modelopt.results.latency import (
    PROCESSES,
    Artifact,
    Pairs,
    Plan,
    TimingError,
    artifact_path,
    artifacts,
    read,
    widest,
    write,
)
from modelopt.run import rebuild
from modelopt.run.rounds import BLOCK_S, Job, answer, child, stall_limit

VERIFIED = ".verified"  # beside an own copy: its rebuild from the saved data was checked

__all__ = ["PROCESSES", "Plan", "TimingError", "UserCode", "artifacts", "run_stage",
           "save_all", "time_artifacts", "time_saved"]


def save_all(model_dir: str | Path, cell_id: str, seed: int, models: dict[str, rebuild.Shipped],
             example, batch, input_shape: tuple, num_outputs: int) -> dict[str, list[str]]:
    """Each shipped model of a cell x seed as data (rebuild.py): the timing stage builds it
    again, here or from a results directory that came from elsewhere. A runtime's own file
    (an ONNX model) is written beside it, for the user to take home; it is never read back.
    Returns, per kind, the files' names."""
    from modelopt.results.files import write_whole

    saved: dict[str, list[str]] = {}
    for kind, item in models.items():
        if item is not None:
            path = artifact_path(model_dir, cell_id, seed, kind)
            rebuild.save(path, item, example, batch, input_shape, num_outputs)
            saved[kind] = [path.name]
            suffix, blob = getattr(item.shipped, "suffix", None), getattr(item.shipped, "blob", None)
            if suffix and isinstance(blob, bytes):
                write_whole(path.with_suffix(suffix), blob)
                saved[kind].append(path.with_suffix(suffix).name)
    return saved


def save_own(own_dir: str | Path, cell_id: str, seed: int, models: dict[str, rebuild.Shipped],
             example, batch, check: tuple | None = None) -> None:
    """The run's own copies of a cell's shipped models, pickled whole into the run's private
    temporary folder: its timing stage times a model from there where the model cannot be
    rebuilt from data (and marks it not re-timeable). Never written to, nor read from, a
    results directory; a model that cannot be pickled just has no copy.

    `check` (the cell's model_dir and Cell): a runtime's file (an ONNX model) is rebuilt
    here, in the cell's process, from the data save_all wrote, and where the rebuild gives
    the cell's outputs its copy is marked `.verified`: the timing stage then times the
    copy, which is the file the cell shipped, instead of exporting and calibrating it again
    while the machine's other cores wait (vision: 35 s of its first timing process)."""
    import torch

    for kind, item in models.items():
        path = artifact_path(own_dir, cell_id, seed, kind)
        try:
            torch.save({"model": item.shipped, "example": example.cpu(), "batch": batch.cpu()},
                       path)
        except Exception:  # noqa: BLE001 - the copy is a fall-back; the data file stands
            Path(path).unlink(missing_ok=True)
            continue
        if check is not None and isinstance(getattr(item.shipped, "blob", None), bytes):
            _verify(path, artifact_path(check[0], cell_id, seed, kind), check[1])


def _verify(own: Path, data: Path, cell) -> None:
    """Marks the own copy `own` verified where the saved `data` rebuilds a model that gives
    the cell's outputs (rebuild.load checks them); a rebuild that fails marks nothing and
    the timing stage tries it again, saying why."""
    try:
        rebuild.load(data, rebuild.Recipe.of(cell))
    except Exception:  # noqa: BLE001 - the stage's own attempt reports the reason
        return
    own.with_suffix(VERIFIED).touch()


@dataclass
class Timed:
    """What a timing stage measured: a row per process and model, and the models it could
    not build again, with the reason (they are not timed)."""

    rows: list[dict]
    skipped: dict[str, str] = field(default_factory=dict)  # artifact key -> reason
    # per process, seconds spent building the models again, warming them up, and timing
    seconds: list[dict] = field(default_factory=list)
    processes: int = 0  # how many ran
    widest: float | None = None  # the widest speed-up interval at the end (Plan.half_width)
    stopped: str = ""  # why no more processes ran


def time_artifacts(items: list[Artifact], plan: Plan = Plan(), threads: int = 1, progress=None,
                   plugins: dict | None = None, pairs: Pairs = ()) -> Timed:
    """Per process and artifact: median and p90 of the per-call block times at batch 1 and at
    the saved batch size. Processes run one after another, each a fresh fork, as many as
    `plan` says: more while a ratio of `pairs` is less precise than it asks. `plugins`: the
    user's plugin context (their suite's, or --plugins), loaded before rebuilding.
    `progress(k, n, note)`: process k of about n is starting."""
    from modelopt.run.processes import context

    stall_s = stall_limit()  # said before any process starts
    ctx = context()
    out = Timed([])
    rows: list[tuple[str, dict]] = []  # (artifact key, row)
    unstable: set[str] = set()
    files: dict = {}  # the first process's runtime files, timed as it built them
    note, k = "", 0
    while True:
        if progress:
            # past the processes planned, of the most it may run (the count does not creep)
            progress(k, plan.processes if k < plan.processes else max(plan.max_processes, k + 1),
                     note)
        # the first process decides which models are rebuilt: one verdict per model, so a
        # model is timed from the same source in every process
        jobs = [Job(a.key, str(a.path), None if a.key in out.skipped else a.recipe,
                    str(a.own_copy) if a.own_copy else None, files.get(a.key),
                    a.own_copy is not None and a.own_copy.with_suffix(VERIFIED).is_file())
                for a in items]
        timed, why, took, made = _process(ctx, jobs, plan.rounds, threads, k, plugins, stall_s)
        files = files or made
        out.seconds.append({stage: round(v, 2) for stage, v in took.items()})
        if k:  # rebuilt in the first process, not in this one: its outputs vary
            unstable |= {key for key in why if key not in out.skipped}
            why = {key: (f"its rebuilt outputs varied between processes ({reason})"
                         if key not in out.skipped else out.skipped[key])
                   for key, reason in why.items()}
        out.skipped.update(why)
        rows += [(a.key, _row(a, timed[a.key], k)) for a in items if a.key in timed]
        k += 1
        out.rows = [row for key, row in rows if key not in unstable]
        out.processes, out.widest = k, widest(out.rows, list(pairs))
        out.stopped, note = _enough(plan, k, out.widest, bool(timed))
        if out.stopped:
            return out


def _enough(plan: Plan, done: int, wide: float | None, timed: bool) -> tuple[str, str]:
    """(why the stage stops after `done` processes, or ""; the progress line's note when it
    goes on past the processes planned)."""
    if not timed:
        return "nothing could be built: the other processes would say the same", ""
    if done < plan.processes:
        return "", ""
    if not plan.adaptive:
        return f"{done} processes, as asked", ""
    if wide is None:
        return f"{done} processes: no speed-up to make precise", ""
    got, want = f"±{wide * 100:.1f} %", f"±{plan.half_width * 100:.0f} %"  # as the docs write
    if wide <= plan.half_width:
        return (f"every speed-up's 95 % interval within {got} after {done} processes "
                f"(wanted {want})"), ""
    if done >= plan.max_processes:
        return (f"the widest speed-up interval is {got} after {done} processes, the "
                f"most it runs (wanted {want})"), ""
    return "", (f"the widest speed-up interval is {got}, wanted {want}: one more "
                f"(at most {plan.max_processes})")


def _process(ctx, jobs: list[Job], rounds: int, threads: int, k: int, plugins: dict | None,
             stall_s: float | None):
    """One fresh timing process (rounds.child); its payload, or TimingError."""
    parent, end = ctx.Pipe()
    proc = ctx.Process(target=child, args=(end, jobs, rounds, threads, k, plugins))
    proc.start()
    end.close()
    try:
        status, payload = answer(parent, stall_s)
    except EOFError:
        proc.join()
        status, payload = "error", f"the timing process died (exit code {proc.exitcode})"
    finally:  # on Ctrl-C too: no timing process outlives the run
        parent.close()
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    if status != "ok":
        raise TimingError(f"timing process {k}: {payload}")
    return payload


def _row(a: Artifact, timed: dict, k: int) -> dict:
    """An artifact's row of process k: medians, and its blocks round by round (for ratios of
    blocks timed moments apart)."""
    b1, bb = timed["1"], timed["batch"]
    return {"side": a.side, "cell_id": a.cell_id, "seed": a.seed, "kind": a.kind,
            "process": k, "ms_batch1": statistics.median(b1), "p90_ms_batch1": _p90(b1),
            "ms_batch": statistics.median(bb), "blocks": len(b1),
            "rounds_batch1": [round(x, 6) for x in b1],
            "rounds_batch": [round(x, 6) for x in bb], "device": timed.get("device"),
            **_generation(timed)}


def _generation(timed: dict) -> dict:
    """A decoder's generation times in a row: median ms of the first token after the prompt
    and of the whole generation, and how many tokens that generated."""
    if "generate" not in timed:
        return {}
    return {"ms_first_token": statistics.median(timed["first_token"]),
            "ms_generate": statistics.median(timed["generate"]),
            "new_tokens": timed["new_tokens"]}


def _p90(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(math.ceil(0.9 * len(s))) - 1)]


# ---------------------------------------------------------------- whose code rebuilds

@dataclass(frozen=True)
class UserCode:
    """The code a rebuild may use besides modelopt's: the plugin context of the suite the user
    runs or names (with its cells' recipes, which win over a record's for the same id), or
    the modules given with --plugins. Never a module or path written in a results file."""

    plugins: dict | None = None
    recipes: dict = field(default_factory=dict)  # cell_id -> rebuild.Recipe, from the suite
    # the factories the user's suite names by import path (`my_model:small_cnn`): the only
    # ones a record may name. Trust is per name, not per module: a record naming another
    # function of a trusted module (`subprocess:getoutput`) chooses code, and is refused
    factories: frozenset = frozenset()

    @classmethod
    def given(cls, suite_path: str | None, modules: list[str] | None) -> "UserCode":
        """What the user named on a command line: a suite file (its plugins and cells), or
        plugin modules (installed, on PYTHONPATH or in the working directory). Raises
        SuiteError for a suite that does not load or a module that does not import."""
        import os

        from modelopt.spec import plugins
        from modelopt.spec.suite import SuiteError, load

        if suite_path:
            return cls.of_suite(load(suite_path))
        if not modules:
            return cls()
        ctx = plugins.context(modules, os.getcwd())
        try:
            plugins.load(ctx)
        except ImportError as exc:
            raise SuiteError("--plugins", "", str(exc)) from None
        return cls(ctx)

    @classmethod
    def of_suite(cls, suite) -> "UserCode":
        ctx = next((c.plugins for c in suite.cells if c.plugins), None)
        # the factories the suite names by import path are the user's own code too
        named = {choice.name for c in suite.cells
                 for choice in (c.model, c.compress.quantize, c.deploy)
                 if choice is not None and ":" in choice.name}
        if named:
            ctx = {**(ctx or {"path": []}), "modules": sorted(
                set((ctx or {}).get("modules") or []) | {n.partition(":")[0] for n in named})}
        return cls(ctx, {c.cell_id: rebuild.Recipe.of(c) for c in suite.cells},
                   frozenset(named))


def with_recipes(items: list[Artifact], user: UserCode) -> tuple[list[Artifact], dict[str, str]]:
    """The artifacts with the recipe each is rebuilt from (the user's suite's, else its
    record's, checked: rebuild.recipe_of_record), and why each other one cannot be rebuilt."""
    from modelopt.spec import plugins

    plugins.load(user.plugins)  # registered here too: the records' configs are checked here
    ready, skipped = [], {}
    checked: dict = {(side, cid): c for cid, c in user.recipes.items() for side in
                     {a.side for a in items}}
    for a in items:  # compare's two sides share cell ids: each side's own record
        if (a.side, a.cell_id) not in checked:
            try:
                checked[(a.side, a.cell_id)] = rebuild.recipe_of_record(a.recorded,
                                                                        user.factories)
            except rebuild.NotRebuildable as exc:
                checked[(a.side, a.cell_id)] = str(exc)
        recipe = checked[(a.side, a.cell_id)]
        if isinstance(recipe, str):
            skipped[a.key] = recipe
            if a.own_copy is not None:  # the run's own stage times it from its own copy
                ready.append(a.with_recipe(None))
        else:
            ready.append(a.with_recipe(recipe))
    return ready, skipped


def time_saved(items: list[Artifact], user: UserCode, plan: Plan = Plan(), threads: int = 1,
               progress=None, pairs: Pairs = ()) -> Timed:
    """Saved models (each carrying its record's config) rebuilt with the user's code and
    timed side by side, for as long as `plan` says `pairs` need; those that cannot be
    rebuilt are listed with the reason."""
    ready, skipped = with_recipes(items, user)
    timed = time_artifacts(ready, plan, threads, progress, user.plugins, pairs) \
        if ready else Timed([])
    timed.skipped = {**skipped, **timed.skipped}
    return timed


# ---------------------------------------------------------------- the stage

def _lost(run_dir: str | Path, rows: list[dict]) -> list[str]:
    """The models an existing timing.json timed that `rows` do not (a malformed one is
    being replaced: nothing to keep)."""
    from modelopt.results.files import ResultsError

    try:
        old = read(run_dir) or {}
    except ResultsError:
        return []
    def models(rs):
        return {f"{r['cell_id']}:{r['seed']}:{r['kind']}" for r in rs}

    return sorted(models(old.get("rows", [])) - models(rows))


def run_stage(run_dir: str | Path, suite: str, keys: set[tuple[str, int]],
              cells: dict[str, dict], user: UserCode, threads: int = 1,
              plan: Plan = Plan(), progress=None,
              own_dir: str | Path | None = None, keep_timed: bool = False) -> int:
    """Time every saved model of the ok (cell_id, seed) pairs of a run, side by side, and
    write timing.json (replacing it: a timing of part of a run cannot be paired with the
    rest), for as long as `plan` says the speed-ups the report shows need (each cell's
    shipped model against its baseline's, results/headline.speedup_pairs).
    `cells`: each cell's config as recorded; `own_dir`: the run's own copies
    (save_own), for the run that made them; `keep_timed`: refuse (TimingError) to replace a
    timing.json whose models this stage could not time again. Returns the number of models
    timed."""
    items = []
    for a in artifacts(run_dir, keys):
        own = Path(own_dir) / a.path.name if own_dir else None
        items.append(replace(a, recorded=cells.get(a.cell_id),
                             own_copy=own if own is not None and own.is_file() else None))
    if not items:
        return 0
    from modelopt.results import store
    from modelopt.results.headline import speedup_pairs

    meta = store.read_meta(run_dir)
    pairs = speedup_pairs({c: cells[c] for c, _ in keys if c in cells},
                          meta.baseline if meta else None,
                          {a.cell_id for a in items if a.kind == "slimmed"})
    timed = time_saved(items, user, plan, threads, progress, pairs)
    lost = _lost(run_dir, timed.rows) if keep_timed else []
    if lost:
        why = {k.lstrip(":"): v for k, v in timed.skipped.items()}
        gone = "its cell and seed have no ok record now (a rerun that failed?)"
        raise TimingError(f"{len(lost)} model(s) timed before could not be timed again, so "
                          f"{Path(run_dir) / 'timing.json'} is kept as it was: "
                          + "; ".join(f"{k}: {why.get(k, gone)}" for k in lost[:3])
                          + (" ..." if len(lost) > 3 else "") + ". "
                          + ("Give --suite or --plugins, or " if any(k in why for k in lost)
                             else "") + "--force to drop their latency")
    # timed from the run's own copy, or not at all: either way not re-timeable later
    # the baseline too: the speed-ups it names are what the stage measured until precise
    write(run_dir, {"suite": suite, "baseline": meta.baseline if meta else None,
                    "processes": timed.processes, "rounds": plan.rounds,
                    "threads": threads, "block_s": BLOCK_S, "plan": plan.as_dict(),
                    "widest": timed.widest, "stopped": timed.stopped,
                    "rows": timed.rows, "seconds": timed.seconds,
                    "not_retimeable": {k.lstrip(":"): v for k, v in timed.skipped.items()}})
    return len({(r["cell_id"], r["seed"], r["kind"]) for r in timed.rows})
