"""Planning a cell's training, the one place every path uses: in a process, in a rank of a
spawned or a launched group, for a KD teacher, and for pruning's fine-tuning."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from modelopt.run.train import Diverged, Outcome, Plan, fit, predict, score
from modelopt.spec.cell import Cell
from modelopt.spec.schema import DEFAULT_STEPS, TrainConfig
from modelopt.techniques import data as data_mod
from modelopt.techniques import distill, losses, models, optim, preprocess, prune, tasks


def total_steps(settings: TrainConfig, n_train: int, full_batch: bool) -> int:
    """steps, or epochs of the training split (one step per epoch for a full-batch optimizer)."""
    if settings.steps is not None:  # 0: post-training (the model as its weights give it)
        return int(settings.steps)
    if settings.epochs:
        per_epoch = 1 if full_batch else math.ceil(n_train / settings.batch_size)
        return max(1, int(round(settings.epochs * per_epoch)))
    return DEFAULT_STEPS


def steps_of(cell: Cell, n_train: int) -> int:
    return total_steps(cell.train.settings, n_train, cell.train.optimizer.info.full_batch)


def make_plan(cell: Cell, net: nn.Module, data: data_mod.Data, steps: int, phase: str) -> Plan:
    """The optimizer, schedule, loss, loss terms and hooks of one training phase of `net`."""
    t = cell.train
    # pruning's fine-tuning is a phase of its own: its optimizer and schedule where named
    optimizer, schedule = ((t.optimizer, t.schedule) if phase == "train" else
                           (t.finetune_optimizer, t.finetune_schedule))
    opt = optim.build_optimizer(optimizer, net)
    plan = Plan(steps=steps, batch_size=t.settings.batch_size,
                eval_every=t.settings.eval_every, optimizer=opt,
                loss_fn=losses.build(t.loss, data.task),
                schedule=schedule.build(opt, steps) if schedule else None,
                schedule_on_eval=bool(schedule and schedule.info.on_eval),
                full_batch=optimizer.info.full_batch,
                record_grad_norms="grad_norms" in t.settings.record, phase=phase)
    for term in (c.build() for c in t.regularization):
        if term.penalty is not None:
            plan.loss_terms.append(lambda m, x, y, out, pen=term.penalty: pen(m))
        if term.before_step is not None:
            plan.before_step.append(term.before_step)
    quantize = cell.compress.quantize
    if quantize is not None:
        hooks = quantize.build().after_step
        if hooks and not cell.compress.trains():  # the training key would leave it out
            raise TypeError(f"quantize '{quantize.name}' acts during training: register it "
                            "with trains=True")
        plan.after_step += hooks
    plan.augment = preprocess.augmenter(cell.data.augment, data)
    return plan


def load_data(cell: Cell, seed: int) -> data_mod.Data:
    d = cell.data
    raw = data_mod.load(d.dataset, seed, d.val_fraction, d.folds, d.fold)
    return preprocess.apply(d.preprocess, raw, seed)


@dataclass
class Trained:
    """The training stage's result: the bare network (on the backend's device), the data it
    trained on, the main phase's outcome, and figures of the stage (teacher, ranks)."""

    net: nn.Module
    data: data_mod.Data
    outcome: Outcome
    info: dict = field(default_factory=dict)


def build_net(cell: Cell, data: data_mod.Data, device, seed: int) -> nn.Module:
    """The cell's network, freshly initialised: same architecture + seed -> same weights
    (paired seeds)."""
    torch.manual_seed(seed)
    net = models.build(cell.model, data.input_shape, data.num_outputs).to(device)
    models.check_forward(net, data.x_test[:3].to(device), cell.model.name)
    models.check_classes(net, data, cell.model.name)
    pruning = cell.compress.prune
    if pruning is not None and pruning.info.structured:  # refused now, not after training
        prune.structurally_prunable(net, pruning.name)
    return net


def train_here(backend, cell: Cell, seed: int, data: data_mod.Data | None = None) -> Trained:
    """Data, model and the main training phase of a cell, in this process (alone, or as one
    rank of a process group: the backend says which share of each batch is this process's)."""
    if data is None:
        data = load_data(cell, seed)
    net = build_net(cell, data, backend.device, seed)
    plan = make_plan(cell, net, data, steps_of(cell, data.n_train), "train")
    plan.shard = backend.shard()
    info = {}
    if cell.train.distill is not None:
        distiller = cell.train.distill.build()
        teacher_net, info = teacher(cell, seed, backend, data)
        plan.loss_terms.append(distiller.term(teacher_net))
        plan.loss_weight = distiller.task_weight
    outcome = fit(backend.wrap(net), data, plan, backend, seed, cell.train.settings.eval_batch_size,
                  net=net)
    if outcome.diverged_at is not None:
        raise Diverged(outcome.diverged_at, "train")
    return Trained(net, data, outcome, info)


def teacher(student: Cell, seed: int, backend, data: data_mod.Data) -> tuple[nn.Module, dict]:
    """The KD teacher: trained as its own cell (or read from the cache), frozen, and its
    test accuracy on the student's data."""
    cell = student.teacher()
    from modelopt.run import dense

    trained, reused = dense.reuse(dense.path_of(cell, seed),
                                  lambda: build_net(cell, data, backend.device, seed),
                                  lambda: train_here(backend, cell, seed), dict)
    cached = reused is not None
    net = distill.frozen(trained.net)
    task = tasks.of(data)
    figure = task.headline_of(score(predict(net, data.x_test, backend), data.y_test, data.task))
    info = {"teacher_cached": cached, f"teacher_{task.info.headline}": figure,
            "teacher_params": sum(p.numel() for p in net.parameters()),
            "teacher_train_seconds": trained.outcome.train_seconds}
    if task.info.headline == "accuracy" and len(data.y_test):  # a classifier's
        info["teacher_majority"] = float(data.y_test.bincount().max()) / len(data.y_test)
    return net, info


def finetuner(cell: Cell, data: data_mod.Data, backend, seed: int):
    """Fine-tuning after a pruning round: the cell's own optimizer, schedule and terms."""
    def finetune(model: nn.Module, steps: int, phase: str) -> Outcome:
        plan = make_plan(cell, model, data, steps, phase)
        out = fit(model, data, plan, backend, seed + 7919, cell.train.settings.eval_batch_size)
        if out.diverged_at is not None:
            raise Diverged(out.diverged_at, phase)
        return out

    return finetune
