"""Planning a cell's training, the one place every path uses: in a process, in a rank of a
spawned or a launched group, for a KD teacher, and for pruning's fine-tuning."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from modelopt.run.train import Diverged, Outcome, Plan, fit, predict, score
from modelopt.spec.registries import DISTILLERS, OPTIMIZERS, QUANTIZERS, SCHEDULES
from modelopt.spec.schema import DEFAULT_STEPS
from modelopt.techniques import data as data_mod
from modelopt.techniques import distill, losses, models, optim, preprocess


def total_steps(train_cfg: dict, n_train: int, full_batch: bool) -> int:
    """steps, or epochs of the training split (one step per epoch for a full-batch optimizer)."""
    if train_cfg.get("steps"):
        return int(train_cfg["steps"])
    if train_cfg.get("epochs"):
        per_epoch = 1 if full_batch else math.ceil(n_train / train_cfg["batch_size"])
        return max(1, int(round(train_cfg["epochs"] * per_epoch)))
    return DEFAULT_STEPS


def steps_of(config: dict, n_train: int) -> int:
    full_batch = OPTIMIZERS.info(config["optimizer"]["name"]).full_batch
    return total_steps(config["train"], n_train, full_batch)


def make_plan(config: dict, net: nn.Module, data: data_mod.Data, steps: int, phase: str) -> Plan:
    """The optimizer, schedule, loss, loss terms and hooks of one training phase of `net`."""
    train_cfg = config["train"]
    opt_spec = config["optimizer"]
    opt = optim.build_optimizer(opt_spec, net)
    sched_spec = config.get("schedule")
    plan = Plan(steps=steps, batch_size=train_cfg["batch_size"],
                eval_every=train_cfg["eval_every"], optimizer=opt,
                loss_fn=losses.build(config.get("loss"), data.task),
                schedule=optim.build_schedule(sched_spec, opt, steps),
                schedule_on_eval=bool(sched_spec and SCHEDULES.info(sched_spec["name"]).on_eval),
                full_batch=OPTIMIZERS.info(opt_spec["name"]).full_batch,
                record_grad_norms="grad_norms" in train_cfg.get("record", []), phase=phase)
    for t in optim.build_terms(config.get("regularization") or []):
        if t.penalty is not None:
            plan.loss_terms.append(lambda m, x, y, out, pen=t.penalty: pen(m))
        if t.before_step is not None:
            plan.before_step.append(t.before_step)
    if config.get("quantize"):
        plan.after_step += QUANTIZERS.build_spec(config["quantize"]).after_step
    plan.augment = preprocess.augmenter(config.get("augment") or [], data)
    return plan


def load_data(config: dict, seed: int) -> data_mod.Data:
    t = config["train"]
    raw = data_mod.load(config["dataset"], seed, t["val_fraction"], t.get("folds", 0),
                        t.get("fold", 0))
    return preprocess.apply(config.get("preprocess") or [], raw, seed)


@dataclass
class Trained:
    """The training stage's result: the bare network (on the backend's device), the data it
    trained on, the main phase's outcome, and figures of the stage (teacher, ranks)."""

    net: nn.Module
    data: data_mod.Data
    outcome: Outcome
    info: dict = field(default_factory=dict)


def build_net(config: dict, data: data_mod.Data, device, seed: int) -> nn.Module:
    """The cell's network, freshly initialised: same architecture + seed -> same weights
    (paired seeds)."""
    torch.manual_seed(seed)
    return models.build(config["model"], data.input_shape, data.num_outputs).to(device)


def train_here(backend, config: dict, seed: int, data: data_mod.Data | None = None) -> Trained:
    """Data, model and the main training phase of a config, in this process (alone, or as one
    rank of a process group: the backend says which share of each batch is this process's)."""
    if data is None:
        data = load_data(config, seed)
    net = build_net(config, data, backend.device, seed)
    plan = make_plan(config, net, data, steps_of(config, data.n_train), "train")
    plan.shard = backend.shard()
    info = {}
    if config.get("distill"):
        distiller = DISTILLERS.build_spec(config["distill"])
        teacher_net, info = teacher(distiller, config, seed, backend, data)
        plan.loss_terms.append(distiller.term(teacher_net))
        plan.loss_weight = distiller.task_weight
    outcome = fit(backend.wrap(net), data, plan, backend, seed, config["train"]["eval_batch_size"],
                  net=net)
    if outcome.diverged_at is not None:
        raise Diverged(outcome.diverged_at, "train")
    return Trained(net, data, outcome, info)


def teacher(distiller, student: dict, seed: int, backend, data: data_mod.Data
            ) -> tuple[nn.Module, dict]:
    """The KD teacher: trained on its own config (or read from the cache), frozen, and its
    test accuracy on the student's data."""
    config = distill.teacher_config(distiller.teacher, student)
    from modelopt.run import dense

    net = models.build(config["model"], data.input_shape, data.num_outputs).to(backend.device)
    net, cached = dense.cached(dense.teacher_path(config, seed), net,
                               lambda: train_here(backend, config, seed).net)
    net = distill.frozen(net)
    accuracy = score(predict(net, data.x_test, backend), data.y_test, data.task)
    return net, {"teacher_cached": cached, "teacher_accuracy": accuracy}


def finetuner(config: dict, data: data_mod.Data, backend, seed: int):
    """Fine-tuning after a pruning round: the cell's own optimizer, schedule and terms."""
    def finetune(model: nn.Module, steps: int, phase: str) -> Outcome:
        plan = make_plan(config, model, data, steps, phase)
        out = fit(model, data, plan, backend, seed + 7919, config["train"]["eval_batch_size"])
        if out.diverged_at is not None:
            raise Diverged(out.diverged_at, phase)
        return out

    return finetune
