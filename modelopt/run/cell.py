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
from modelopt.run.train import Diverged, Outcome, predict, score
from modelopt.spec import plugins
from modelopt.spec.cell import Cell, Choice
from modelopt.techniques import prune, quantize, tasks
from modelopt.techniques.data import Data, train_sample
from modelopt.techniques.deploy import Format
from modelopt.techniques.errors import TechniqueError


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


@dataclass
class Deployed:
    """The model that ships (the int8 copy, or the trained model, as its deploy format makes
    it: compiled, packaged), the model it is counted on (parameters, size: before the
    format wraps it, or a runtime's own file), what converting it did, and its test figures
    where they differ from the trained model's."""

    model: nn.Module
    counted: nn.Module
    info: dict
    test: dict
    outputs: torch.Tensor | None = None  # its test outputs, where this stage computed them
    calibration: torch.Tensor | None = None  # the quantizer's inputs, where it converted
    on: object = None  # where it runs (a backend: the CPU for int8 kernels)


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
        slimmed = _ship_slimmed(cell, compressed, data)
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


def deploy(cell: Cell, trained: Trained) -> Deployed:
    """The model that ships: the quantizer's conversion of the trained model, if it has one,
    then the deploy format's artifact of it. What ships is what counts: its every test
    figure, loss included."""
    quantize = cell.compress.quantize
    quantizer = quantize.build() if quantize is not None else None
    fmt = runtime(cell.deploy)
    model, info, inputs = on_its_device(trained.net, fmt), {}, None
    if quantizer is not None and fmt.converts(quantizer):
        inputs, _ = train_sample(trained.data, quantizer.calibration)
        model, info = fmt.realise(quantizer, model, inputs)
    on = backends.on_device_of(model)  # x86 int8 kernels are the CPU's; torchao's any
    if on.device != backends.on_device_of(trained.net).device:  # env names the training's
        info["shipped_on"] = on.device
    shipped, made, outputs = ship_checked(cell, model, trained.data, on)
    info.update(made)
    if shipped is trained.net:
        return Deployed(shipped, model, info, {}, on=on)
    if outputs is None:
        outputs = predict(shipped, trained.data.x_test, on, cell.train.settings.eval_batch_size)
    bad = int((~torch.isfinite(outputs)).sum())
    if bad:  # e.g. float16's range (±65504) overflowed: never figures of something else
        raise TechniqueError(f"the shipped model's test outputs are not finite ({bad} of "
                             f"{outputs.numel()} values inf or nan): it overflowed where the "
                             "trained model did not")
    return Deployed(shipped, shipped if fmt.file else model, info,
                    test_metrics(outputs, trained.data), outputs, inputs, on)


def _ship_slimmed(cell: Cell, compressed: Compressed, data: Data) -> Shipped | None:
    """What structured pruning ships, in the cell's format too, checked against the slimmed
    model; what making it took among the slimmed model's figures."""
    slimmed = compressed.pruned.slimmed if compressed.pruned is not None else None
    if slimmed is None or cell.deploy is None:
        return None if slimmed is None else Shipped(slimmed, slimmed)
    fmt = runtime(cell.deploy)
    model = on_its_device(slimmed, fmt)
    shipped, made, _ = ship_checked(cell, model, data, backends.on_device_of(model))
    compressed.pruned.slimmed = shipped
    compressed.slimmed.update(made)
    if fmt.file:  # its size is the runtime's file, as the shipped model's is
        compressed.slimmed["size_bytes"] = measure.size_bytes(shipped)
    return Shipped(slimmed, shipped)


def ship_checked(cell: Cell, model: nn.Module, data: Data, on
                 ) -> tuple[nn.Module, dict, torch.Tensor | None]:
    """The deploy format's artifact of `model`, what making it took, and its test outputs
    (None when it is `model` itself), checked against the model's (`on`: where both run)."""
    info: dict = {}
    shipped = ship(cell.deploy, model, out_batch(data, cell), info)
    if shipped is model:
        return shipped, info, None
    reference = predict(model, data.x_test, on, cell.train.settings.eval_batch_size)
    outputs = predict(shipped, data.x_test, on, cell.train.settings.eval_batch_size)
    info.update(check_outputs(outputs, reference, data, cell))
    return shipped, info, outputs


def on_its_device(model: nn.Module, fmt: Format) -> nn.Module:
    """The model a format ships from: a CPU copy where the suite ships on the CPU a model
    that trained on a GPU (`deploy: {device: cpu}`), else the model itself."""
    if fmt.cpu and backends.on_device_of(model) is not backends.CPU:
        return quantize.float_copy(model)
    return model


def out_batch(data: Data, cell: Cell) -> torch.Tensor:
    """The batch latency is timed at (and compilation specialises for): test inputs."""
    return data.x_test[:cell.train.settings.batch_size]


def runtime(deploy: Choice | None) -> Format:
    """The runtime a cell's model ships on (eager where it names none)."""
    return deploy.build() if deploy is not None else Format()


def ship(deploy: Choice | None, model: nn.Module, batch: torch.Tensor, info: dict) -> nn.Module:
    """The deploy format's artifact of `model` (itself when eager); adds what making it took
    (compile seconds, package bytes) to `info`."""
    fmt = runtime(deploy)
    if fmt.ship is None:
        return model
    # compiled and traced as it runs: in eval mode (batch norm's running statistics; a
    # batch of one has no batch statistics to take)
    artifact, made = fmt.ship(model.eval(), batch.to(backends.on_device_of(model).device))
    info.update(made)
    return artifact


def check_outputs(out: torch.Tensor, reference: torch.Tensor, data: Data, cell: Cell) -> dict:
    """The artifact's test outputs against the model's; a mismatch fails the cell."""
    diff = float((out - reference).abs().max()) if len(out) else 0.0
    agreed, ok = tasks.of(data).check(out, reference)  # the task's own check
    figures = {"deploy_max_abs_diff": diff, **agreed}
    if not ok or not math.isfinite(diff):
        raise TechniqueError(
            f"deploy: {cell.deploy.name}: the artifact's test outputs differ from the"
            f" model's it was made from (max |diff| {diff:.3g}"
            + (f", classes agree on {figures['deploy_agreement']:.1%}" if "deploy_agreement"
               in figures else "") + ")")
    return figures


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
    metrics.update({**deployed.info, **deployed.test, **counts, **extra_figures})
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


def test_metrics(out: torch.Tensor, data: Data) -> dict:
    """The task's test figures, loss included, of a model's outputs on the test split."""
    return tasks.of(data).metrics(out, data)


def env(backend: backends.Backend, threads: int) -> dict:
    flags = measure.cpu_flags()  # with the flags looked for, where they could be read
    read = {} if flags is None else {"cpu_flags": flags,
                                     "cpu_flags_checked": " ".join(measure.CPU_FLAGS)}
    return {"torch": torch.__version__, "torchao": quantize.torchao_version(),
            "python": platform.python_version(), "threads": threads,
            "cpu": measure.cpu_model(), **read,
            "cpu_count": backends.cpu_count(), **backend.env()}
