"""One cell x seed, in stages: data -> model -> train -> compress -> measure.

Each stage is a plain function of what the previous one produced. Files, processes and
progress are the runner's; latency is the timing stage's (timing.py).
"""

from __future__ import annotations

import contextlib
import copy
import math
import platform
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from modelopt import backends, distill, losses, measure, models, optim, preprocess, prune, quantize
from modelopt import data as data_mod
from modelopt.train import Outcome, Plan, fit, predict, total_steps


class Diverged(RuntimeError):
    def __init__(self, step: int, phase: str):
        super().__init__(f"loss became NaN/inf at {phase} step {step}")
        self.step, self.phase = step, phase


@dataclass
class CellOutput:
    status: str  # ok | diverged
    metrics: dict
    curves: list[dict]
    env: dict
    extra: dict = field(default_factory=dict)  # per-cell detail (grad norms, histograms)
    error: str | None = None
    # what the timing stage times (timing.py): "model", the deployed model (masked or int8
    # copy included), and "slimmed" where structured pruning removed channels
    models: dict[str, nn.Module] = field(default_factory=dict)
    example: torch.Tensor | None = None  # batch 1
    batch: torch.Tensor | None = None  # the training batch size


def setup(backend: backends.Backend, threads: int) -> int:
    """Deterministic kernels and a fixed thread count: the same seed gives the same numbers."""
    threads = backend.threads or threads
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if backend.is_cuda:
        torch.backends.cudnn.benchmark = False
    return threads


def make_plan(config: dict, model: nn.Module, data: data_mod.Data, steps: int, phase: str,
              optimizer_spec: dict | None = None) -> Plan:
    """The optimizer, schedule, loss and hooks of one training phase."""
    train_cfg = config["train"]
    opt_spec = optimizer_spec or config["optimizer"]
    full_batch = bool(optim.OPTIMIZERS.get(opt_spec["name"]).flags.get("full_batch"))
    opt = optim.build_optimizer(opt_spec, [p for p in model.parameters() if p.requires_grad])
    sched_spec = config.get("schedule")
    schedule = optim.build_schedule(sched_spec, opt, steps)
    on_eval = bool(sched_spec and optim.SCHEDULES.get(sched_spec["name"]).flags.get("on_eval"))
    terms = optim.build_terms(config.get("regularization") or [])
    plan = Plan(steps=steps, batch_size=train_cfg["batch_size"],
                eval_every=train_cfg["eval_every"], optimizer=opt,
                loss_fn=losses.build(config.get("loss"), data.task), schedule=schedule,
                schedule_on_eval=on_eval, full_batch=full_batch,
                record_grad_norms="grad_norms" in train_cfg.get("record", []), phase=phase)
    for t in terms:
        if t.penalty is not None:
            plan.loss_terms.append(lambda m, x, y, out, pen=t.penalty: pen(m))
        if t.before_step is not None:
            plan.before_step.append(t.before_step)
    plan.after_step += quantize.train_hooks(config.get("quantize"))
    plan.augment = preprocess.augmenter(config.get("augment") or [], data)
    return plan


def train_model(config: dict, seed: int, backend: backends.Backend,
                data: data_mod.Data | None = None) -> tuple[nn.Module, data_mod.Data, Outcome]:
    """Data, model and the main training phase of a config (also used for KD teachers)."""
    train_cfg = config["train"]
    if data is None:
        data = load_data(config, seed)
    if backend.world_size > 1:
        return _train_ddp(config, seed, backend, data)
    torch.manual_seed(seed)  # paired seeds: same architecture + seed -> same initial weights
    model = models.build(config["model"], data.input_shape, data.num_outputs).to(backend.device)
    full_batch = bool(optim.OPTIMIZERS.get(config["optimizer"]["name"]).flags.get("full_batch"))
    steps = total_steps(train_cfg, len(data.x_train), full_batch)
    plan = make_plan(config, model, data, steps, "train")
    if config.get("distill"):
        term, plan.loss_weight, info = distill.loss_term(config["distill"], config, data, seed,
                                                         backend, teacher_trainer)
        plan.loss_terms.append(term)
        data.info.update(info)
    outcome = fit(model, data, plan, backend, seed, train_cfg["eval_batch_size"])
    if outcome.diverged_at is not None:
        raise Diverged(outcome.diverged_at, "train")
    return model, data, outcome


def _train_ddp(config, seed, backend, data):
    from modelopt import distributed

    if config.get("distill"):
        raise ValueError("distill with the ddp backend is not supported; use cpu or cuda")
    if torch.distributed.is_initialized():  # this process is rank 0 of a launched job
        model, outcome = distributed.train_rank(config, seed, backend, data)
    else:
        state, outcome, startup = distributed.train(config, seed, backend)
        model = models.build(config["model"], data.input_shape, data.num_outputs)
        model.load_state_dict(state)
        model.to(backend.device)
        data.info["ddp_startup_s"] = startup  # rank start-up, reported apart from training
        data.info["ddp_world_size"] = backend.world_size
    if outcome.diverged_at is not None:
        raise Diverged(outcome.diverged_at, "train")
    return model, data, outcome


def teacher_trainer(teacher_config: dict, seed: int, backend):
    model, _, outcome = train_model(teacher_config, seed, backend)
    return model, outcome


def load_data(config: dict, seed: int) -> data_mod.Data:
    t = config["train"]
    raw = data_mod.load(config["dataset"], seed, t["val_fraction"], t.get("folds", 0),
                        t.get("fold", 0))
    return preprocess.apply(config.get("preprocess") or [], raw, seed)


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


def run_cell(config: dict, seed: int, threads: int = 1,
             backend: backends.Backend | None = None) -> CellOutput:
    """Train, compress and measure one cell; latency is not measured here but by the run's
    timing stage, over the models this returns. `backend` replaces the config's (a rank of
    a launched job passes its own)."""
    from modelopt.suite import registries

    registries()  # user plugins (MODELOPT_PLUGINS) register in this process too
    backend = backend or backends.build(config["backend"])
    threads = setup(backend, threads)
    info = env(backend, threads)
    phase = Phases()
    with phase("data"):
        data = load_data(config, seed)
    example = data.x_test[:1].clone()
    # a CPU workload says nothing of a GPU's speed: cuda cells record no probe
    probe = (lambda: None) if backend.is_cuda else (lambda: measure.machine_probe(threads))
    probe_before = probe()
    with measure.PeakMemory() as mem:  # the window: training, compression, evaluation
        if backend.is_cuda:
            torch.cuda.reset_peak_memory_stats(backend.device)
        try:
            with phase("train"):
                model, data, outcome = train_model(config, seed, backend, data)
            with phase("compress"):
                pruned = (prune.apply(config["prune"], model, data,
                                      _finetuner(config, data, backend, seed))
                          if config.get("prune") else None)
        except Diverged as d:
            return CellOutput("diverged", {"diverged_at_step": d.step}, [], info, error=str(d))
        final = pruned.finetune if pruned and pruned.finetune else outcome
        with phase("evaluate"):
            metrics = evaluate(model, data, backend, config["train"]["eval_batch_size"])
    probe_after = probe()
    metrics.update(training_metrics(config, data.task, outcome, final))
    # the machine's speed beside the training's, in the same process and minute: compare
    # gates train_samples_s x machine_probe_ms, which the machine's own drift cancels from
    if probe_before is not None:
        metrics["machine_probe_ms"] = (probe_before + probe_after) / 2
    metrics.update({"peak_rss_mb": mem.peak_mb, "baseline_rss_mb": mem.baseline_mb})
    if backend.is_cuda:
        metrics["peak_cuda_mb"] = measure.cuda_peak_mb(backend.device)
    metrics.update(data.info)
    curves, extra = list(outcome.curves), {}
    norms = outcome.grad_norms + (final.grad_norms if final is not outcome else [])
    if norms:
        extra["grad_norms"] = norms
    if pruned:
        metrics.update(pruned.info)
        extra["weight_histograms"] = pruned.histograms
        curves += final.curves if final is not outcome else []

    with phase("measure"):
        deploy = model
        if config.get("quantize"):
            deploy, q_info = quantize.apply(config["quantize"], model, data, backend)
            metrics.update(q_info)
            if deploy is not model:  # the quantized copy is what ships: its accuracy counts
                q_metrics = evaluate(deploy, data, _CPU, config["train"]["eval_batch_size"])
                metrics.update(q_metrics)  # every test figure, loss included, of the int8 copy
        metrics.update(static_metrics(deploy, model, example))
    extra["phase_seconds"] = phase.seconds
    models_out = {"model": deploy}
    if pruned and pruned.slimmed is not None:
        models_out["slimmed"] = pruned.slimmed
    return CellOutput("ok", metrics, curves, info, extra, models=models_out, example=example,
                      batch=data.x_test[:config["train"]["batch_size"]].clone())


def training_metrics(config: dict, task: str, outcome: Outcome, final: Outcome) -> dict:
    """Speed, steps, the best-validation figures (of the phase that made the final model)
    and time to target."""
    best = final.best
    key = "accuracy" if task == "classification" else "r2"
    vals = [c["val_score"] for c in final.curves
            if c["val_score"] is not None and not math.isnan(c["val_score"])]
    out = {f"{key}_best_val": best["test_score"] if best else None,
           "best_val_step": best["step"] if best else None,
           "val_score": vals[-1] if vals else None,  # what tune chooses by; never test
           "final_step": outcome.steps, "train_seconds": outcome.train_seconds,
           "train_samples_s": (outcome.samples / outcome.train_seconds
                               if outcome.train_seconds else None)}
    out.update(time_to_target(outcome.curves, config["train"].get("target"),
                              outcome.train_seconds, outcome.steps))
    return out


_CPU = backends.Backend("cpu", "cpu", None)


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


def _finetuner(config, data, backend, seed):
    def finetune(model: nn.Module, steps: int, phase: str) -> Outcome:
        plan = make_plan(config, model, data, steps, phase)
        out = fit(model, data, plan, backend, seed + 7919, config["train"]["eval_batch_size"])
        if out.diverged_at is not None:
            raise Diverged(out.diverged_at, phase)
        return out

    return finetune


def evaluate(model: nn.Module, data: data_mod.Data, backend, eval_batch: int) -> dict:
    out = predict(model, data.x_test, backend, eval_batch)
    if data.task == "classification":
        metrics = measure.classification_metrics(out, data.y_test, data.num_classes)
        metrics["loss"] = float(nn.functional.cross_entropy(out, data.y_test))
        return metrics
    scale, shift = data.target_scale
    metrics = measure.regression_metrics(out, data.y_test, scale, shift)
    metrics["loss"] = float(nn.functional.mse_loss(out.reshape(-1), data.y_test))
    return metrics


# L1 drives weights towards zero, but an optimizer keeps them hovering around it rather than
# on it: params_above_1e-3 counts the weights that matter at this (stated) threshold.
SMALL_WEIGHT = 1e-3


def static_metrics(deploy: nn.Module, fp32: nn.Module, example: torch.Tensor) -> dict:
    """Counts of the deployed model. FLOPs come from its float version on the CPU:
    FlopCounterMode has no formulas for quantized kernels, and an int8 model performs the
    same multiply-adds."""
    params, nonzero = measure.count_params(deploy)
    _, above = measure.count_params(deploy, threshold=SMALL_WEIGHT)
    counted = copy.deepcopy(fp32).cpu()
    return {"params": params, "params_nonzero": nonzero, "sparsity": 1 - nonzero / max(params, 1),
            "params_above_1e-3": above,
            "size_bytes": measure.size_bytes(deploy),
            "size_bytes_compressed": measure.size_bytes_compressed(deploy),
            "flops": measure.flops(counted, example),
            "flops_nonzero": measure.flops_nonzero(counted, example)}


def env(backend: backends.Backend, threads: int) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(),
            "device": backend.device, "threads": threads,
            "cpu": measure.cpu_model(), "cpu_count": measure.cpu_count()}
    if backend.is_cuda:
        info["gpu"] = torch.cuda.get_device_name(backend.device)
    return info
