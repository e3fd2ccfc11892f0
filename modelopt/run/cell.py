"""One cell x seed, in stages: data -> train -> compress -> evaluate -> deploy -> measure.

Each stage is a plain function of what the earlier ones produced, returning a typed result;
`run_cell` calls them in order and merges their figures once. Files, processes and progress
are the runner's; latency is the timing stage's (timing.py).
"""

from __future__ import annotations

import contextlib
import math
import platform
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from modelopt.run import backends, dense, measure, measures
from modelopt.run.counts import model_counts, static_metrics
from modelopt.run.plan import Trained, build_net, finetuner, load_data
from modelopt.run.rebuild import Shipped
from modelopt.run.ship import Deployed, deploy, out_batch, ship_slimmed, test_metrics
from modelopt.run.train import Diverged, Outcome, predict, score
from modelopt.spec import outcomes, plugins
from modelopt.spec.cell import Cell
from modelopt.techniques import prune, quantize, tasks
from modelopt.techniques.data import Data


@dataclass
class CellOutput:
    status: str  # ok | diverged
    metrics: dict
    curves: list[dict]
    env: dict
    extra: dict = field(default_factory=dict)  # per-cell detail (grad norms, histograms)
    error: str | None = None
    # what the timing stage rebuilds and times (rebuild.py, timing.py): "model", the deployed
    # model (masked or int8 copy included), and "slimmed" (structured pruning's)
    models: dict[str, Shipped] = field(default_factory=dict)
    # the figures of the models other than the shipped one, by kind ("slimmed"); `metrics`
    # are the shipped model's and the cell's (results/metrics.py MODELS)
    figures_of: dict[str, dict] = field(default_factory=dict)
    example: torch.Tensor | None = None  # batch 1
    batch: torch.Tensor | None = None  # the training batch size
    input_shape: tuple = ()  # what the model is built for (rebuilt from the cell and these)
    num_outputs: int = 0


class Phases:
    """Wall seconds per stage of a cell (data, train, compress, evaluate, measure)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


@dataclass
class Compressed:
    """The compress stage: pruning's result (None without pruning) and the phase whose
    outcome made the final model (fine-tuning, else training)."""

    pruned: prune.Pruned | None
    final: Outcome
    info: dict = field(default_factory=dict)  # the pruning's figures
    slimmed: dict = field(default_factory=dict)  # the slimmed model's own figures




def run_cell(cell: Cell, seed: int, threads: int = 1,
             backend: backends.Backend | None = None, dense_path: str | None = None,
             dense_dir: str | None = None) -> CellOutput:
    """Train, compress and measure one cell; latency is not measured here but by the run's
    timing stage, over the models this returns. `backend` replaces the cell's (a rank of
    a launched job passes its own). `dense_path`: where the run keeps this cell's trained
    network for the other cells of its training prefix (dense.py); `dense_dir`: where the
    run keeps trained networks, KD teachers included (none: every teacher is trained)."""
    plugins.load(cell.plugins)  # user plugins register in this process too
    dense.keep_in(dense_dir)
    backend = backend or cell.backend.build()
    threads = backend.prepare(threads)
    phase = Phases()
    with phase("data"):
        data = load_data(cell, seed)
    probe = _probe(backend, threads)
    probe_before = probe()
    with measure.PeakMemory() as mem:  # the window: training, compression, evaluation
        backend.reset_peak_memory()
        try:
            with phase("train"):
                trained, reused = dense.reuse(
                    dense_path, lambda: build_net(cell, data, backend.device, seed),
                    lambda: backend.train(cell, seed, data),
                    lambda: {"peak_rss_mb": mem.so_far(), "machine_probe_ms": probe_before,
                             **backend.peak_memory()})
                trained.data = data
            torch.manual_seed(seed + 1)  # what follows draws alike, trained here or loaded
            with phase("compress"):
                compressed = compress(cell, trained, backend, seed)
        except Diverged as d:
            return CellOutput("diverged", {"diverged_at_step": d.step}, [],
                              env(backend, threads), error=str(d))
        with phase("evaluate"):  # as the model ships: on its device, without autocast
            test = evaluate(trained.net, trained.data, backends.on_device_of(trained.net),
                            cell.train.settings.eval_batch_size)
        device_peak = backend.peak_memory()  # the RSS's window, not deploy's compiling
    probe_after = probe()
    with phase("measure"):
        deployed = deploy(cell, trained)
        slimmed = _slimmed(cell, compressed, data, deployed)
        counts = static_metrics(deployed.counted, trained.net, data.x_test[:1])
        extra_figures = measured(deployed, trained, cell)
    memory = {"peak_rss_mb": mem.peak_mb, "baseline_rss_mb": mem.baseline_mb,
              "cores": backend.cores(), "gpus": backend.gpus(), **device_peak}
    _resources(memory, (probe_before, probe_after), reused, trained.info.pop("rank_peaks", {}))
    out = _merge(cell, trained, compressed, test, deployed, counts, extra_figures, memory)
    out.models = _shipped(trained, deployed, slimmed)
    out.env = env(backend, threads)
    out.extra["phase_seconds"] = phase.seconds
    out.extra["train_key"] = dense.key(cell, seed)  # cells sharing it share its training
    out.batch = out_batch(data, cell).clone()
    out.input_shape, out.num_outputs = tuple(data.input_shape), data.num_outputs
    return out


def _slimmed(cell: Cell, compressed: Compressed, data: Data, deployed: Deployed
             ) -> Shipped | None:
    """Structured pruning's slimmed model as it ships (quantized and made as the masked
    model is), its figures among the slimmed model's."""
    if compressed.pruned is None or compressed.pruned.slimmed is None:
        return None
    shipped, figures = ship_slimmed(cell, compressed.pruned.slimmed, data, deployed)
    compressed.slimmed.update(figures)
    return shipped


def _resources(memory: dict, probes: tuple, reused: dict | None, rank_peaks: dict) -> None:
    """The machine probe and the peaks of a training that ran elsewhere (a DDP cell's rank
    0, a training reused from the cell that ran it) into the cell's resource figures."""
    if probes[0] is not None:
        # the machine's speed beside the training's, in the same process and minute: compare
        # gates train_samples_s x machine_probe_ms, which the machine's own drift cancels from
        memory["machine_probe_ms"] = (probes[0] + probes[1]) / 2
    memory["dense_reused"] = reused is not None
    for key, peak in [*rank_peaks.items(), *(reused or {}).items()]:
        if key.startswith("peak_") and peak is not None:
            memory[key] = max(memory.get(key) or 0.0, peak)
    if reused is not None and reused.get("machine_probe_ms") is not None:  # none: a teacher's
        memory["machine_probe_ms"] = reused["machine_probe_ms"]


def _shipped(trained: Trained, deployed: Deployed, slimmed: Shipped | None) -> dict:
    """What the timing stage rebuilds: the deployed model from the trained network (through
    the quantizer, where it converted), and the slimmed one."""
    model = Shipped(trained.net, deployed.model, deployed.calibration is not None,
                    deployed.calibration)
    return {"model": model, **({"slimmed": slimmed} if slimmed is not None else {})}


def _probe(backend: backends.Backend, threads: int):
    if not backend.measures_cpu_speed():
        return lambda: None
    return lambda: measure.machine_probe(threads)


def compress(cell: Cell, trained: Trained, backend, seed: int) -> Compressed:
    """Pruning (with its fine-tuning), in place on the trained network."""
    if cell.compress.prune is None:
        return Compressed(None, trained.outcome)
    pruned = prune.apply(cell.compress.prune, trained.net, trained.data,
                         finetuner(cell, trained.data, backend, seed))
    slimmed = {}
    if pruned.slimmed is not None:
        slimmed = {**model_counts(pruned.slimmed, trained.data.x_test[:1]),
                   "max_abs_diff": pruned.slimmed_diff}
    return Compressed(pruned, pruned.finetune or trained.outcome, dict(pruned.info), slimmed)


def measured(deployed: Deployed, trained: Trained, cell: Cell) -> dict:
    """The figures of the measures the cell names (run/measures.py), on the shipped model."""
    specs = cell.metrics
    if not specs:
        return {}
    outputs = deployed.outputs
    if outputs is None:  # the trained network ships as it is: on its device, no autocast
        outputs = predict(deployed.model, trained.data.x_test, deployed.on,
                          cell.train.settings.eval_batch_size)
    return measures.compute(specs, measures.Evaluated(deployed.model, trained.data, outputs))


def _merge(cell: Cell, trained: Trained, compressed: Compressed, test: dict,
           deployed: Deployed, counts: dict, extra_figures: dict, memory: dict) -> CellOutput:
    """Every stage's figures, merged once; later stages win where they measure the shipped
    model (the int8 copy's test figures over the trained model's)."""
    outcome, final, pruned = trained.outcome, compressed.final, compressed.pruned
    metrics = {**test, **training_metrics(cell, trained.data, outcome, final), **memory,
               **trained.data.info, **trained.info}
    curves, extra = list(outcome.curves), {}
    norms = outcome.grad_norms + (final.grad_norms if final is not outcome else [])
    if norms:
        extra["grad_norms"] = norms
    if pruned:
        metrics.update(compressed.info)
        # a pruned cell's training time is its training and its fine-tuning
        metrics["finetune_seconds"] = pruned.finetune_seconds
        metrics["train_seconds"] = outcome.train_seconds + pruned.finetune_seconds
        extra["weight_histograms"] = pruned.histograms
        curves += final.curves if final is not outcome else []
    # the training budget of the shipped model: a Δ between rows of different budgets may be
    # the budget's, not the technique's (the report's headline says so)
    metrics["steps_total"] = outcome.steps + (pruned.finetuned_steps if pruned else 0)
    metrics["test_samples"] = len(trained.data.y_test)  # the figures' own sampling: 1 of N
    metrics["val_samples"] = len(trained.data.y_val)  # what tune and early stopping read
    metrics.update({**deployed.info, **deployed.test, **counts, **extra_figures})
    if outcomes.KEY in metrics:  # the shipped model's, as its figures are: not a figure
        extra[outcomes.KEY] = metrics.pop(outcomes.KEY)
    # every figure is the shipped model's own: its validation score evaluated (what tune
    # chooses by), and no best-validation checkpoint of a network it is not (the float
    # model of an int8 copy, the dense one of a pruned model never trained after pruning)
    metrics["val_score"] = own_val_score(deployed, trained.data, cell)
    if deployed.calibration is not None or (pruned and pruned.finetune is None):
        metrics.pop(tasks.get(trained.data.task).info.best_val, None)
        metrics.pop("best_val_step", None)
    others = {"slimmed": compressed.slimmed} if compressed.slimmed else {}
    return CellOutput("ok", metrics, curves, {}, extra, figures_of=others,
                      example=trained.data.x_test[:1].clone())


def own_val_score(deployed: Deployed, data: Data, cell: Cell) -> float | None:
    """The shipped model's validation score (none without a validation split)."""
    if not len(data.y_val):
        return None
    out = predict(deployed.model, data.x_val, deployed.on, cell.train.settings.eval_batch_size)
    value = score(out, data.y_val, data.task)
    return None if math.isnan(value) else value


def training_metrics(cell: Cell, data: Data, outcome: Outcome, final: Outcome) -> dict:
    """Speed (and tokens/s, of token inputs), steps, the best-validation figures (of the
    phase that made the final model) and time to target."""
    best, task = final.best, tasks.of(data)
    vals = [c["val_score"] for c in final.curves
            if c["val_score"] is not None and not math.isnan(c["val_score"])]
    out = {task.info.best_val: task.headline_of(best["test_score"]) if best else None,
           "best_val_step": best["step"] if best else None,
           "val_score": vals[-1] if vals else None,  # what tune chooses by; never test
           "final_step": outcome.steps, "train_seconds": outcome.train_seconds,
           "train_samples_s": (outcome.samples / outcome.train_seconds
                               if outcome.train_seconds else None)}
    if data.vocab_size and out["train_samples_s"]:
        out["train_tokens_s"] = out["train_samples_s"] * data.input_shape[0]
    out.update(time_to_target(outcome.curves, cell.train.settings.target,
                              outcome.train_seconds, outcome.steps))
    return out


def time_to_target(curves: list[dict], target: float | None, seconds: float, steps: int) -> dict:
    """Training seconds and steps until the validation score first reached `target`; a cell
    that never does is `target_reached: false` and counts its whole budget."""
    if target is None:
        return {}
    for c in curves:
        if c["phase"] == "train" and c["val_score"] is not None and c["val_score"] >= target:
            return {"target_reached": True, "time_to_target_s": c["seconds"],
                    "steps_to_target": c["step"]}
    return {"target_reached": False, "time_to_target_s": seconds, "steps_to_target": steps}


def evaluate(model: nn.Module, data: Data, backend, eval_batch: int) -> dict:
    return test_metrics(predict(model, data.x_test, backend, eval_batch), data)


def env(backend: backends.Backend, threads: int) -> dict:
    flags = measure.cpu_flags()  # with the flags looked for, where they could be read
    read = {} if flags is None else {"cpu_flags": flags,
                                     "cpu_flags_checked": " ".join(measure.CPU_FLAGS)}
    return {"torch": torch.__version__, "torchao": quantize.torchao_version(),
            "python": platform.python_version(), "threads": threads,
            "cpu": measure.cpu_model(), **read,
            "cpu_count": backends.cpu_count(), **backend.env()}
