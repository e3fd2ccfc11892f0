"""The training loop: one function, with a few named extension points."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from modelopt.run.backends import Backend, on_device_of
from modelopt.techniques import tasks
from modelopt.techniques.data import Data, rows

# Extension points. A loss term adds to the task loss (regularization, distillation); a hook
# runs before optimizer.step (gradient clipping) or after it (weight clipping).
LossTerm = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Hook = Callable[[nn.Module], None]
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class Plan:
    """What one training phase does; built by plan.make_plan from a cell's config."""

    steps: int
    batch_size: int
    eval_every: int
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    schedule: object | None = None
    schedule_on_eval: bool = False
    loss_terms: list[LossTerm] = field(default_factory=list)
    before_step: list[Hook] = field(default_factory=list)
    after_step: list[Hook] = field(default_factory=list)
    augment: Augment | None = None
    loss_weight: float = 1.0  # weight of the task loss (KD lowers it to 1 - alpha)
    full_batch: bool = False
    record_grad_norms: bool = False
    phase: str = "train"
    shard: tuple[int, int] | None = None  # (rank, world_size) under DDP


@dataclass
class Outcome:
    curves: list[dict]
    steps: int
    samples: int
    train_seconds: float
    diverged_at: int | None
    best: dict | None  # the eval with the best validation score, and its test score
    grad_norms: list[dict]


class Diverged(RuntimeError):
    def __init__(self, step: int, phase: str):
        super().__init__(f"loss became NaN/inf at {phase} step {step}")
        self.step, self.phase = step, phase


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, backend: Backend, batch: int = 1000) -> torch.Tensor:
    """Outputs for x in eval mode, in batches, on the CPU as float32."""
    was_training = model.training
    model.eval()
    outs = []
    for i in range(0, len(x), batch):
        with backend.autocast():
            outs.append(model(x[i:i + batch].to(backend.device)).float().cpu())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.zeros(0)


def score(outputs: torch.Tensor, y: torch.Tensor, task: str) -> float:
    """The validation score used for best-epoch selection: the task's (accuracy, R²); NaN
    for an empty split."""
    if len(y) == 0:
        return float("nan")
    return tasks.get(task).score(outputs, y)


def _layer_grad_norms(model: nn.Module) -> dict[str, float]:
    return {n: float(p.grad.norm()) for n, p in model.named_parameters()
            if p.grad is not None and p.dim() > 1}


def _memory_batches(data: Data, batch: int, seed: int, shard: tuple[int, int] | None,
                    dev: torch.device, whole: bool = False):
    """Endless (inputs, labels, global batch size) from in-memory tensors: slices of a seeded
    permutation per epoch (the tail dropped; no per-sample Python); rank r of a process group
    takes r::world of each global batch. `whole`: every step takes the same `batch` samples
    (a full batch cut to a multiple of the world size: the same samples every step, or the
    objective would change from step to step). The training set moves to the device now,
    before the clock starts, not inside the first timed step."""
    x, y = (data.x_train[:batch], data.y_train[:batch]) if whole else (data.x_train,
                                                                      data.y_train)
    return _slices(x.to(dev), y.to(dev), batch, seed, shard)


def _slices(x_train: torch.Tensor, y_train: torch.Tensor, batch: int, seed: int,
            shard: tuple[int, int] | None):
    gen = torch.Generator().manual_seed(seed)  # on the CPU: the same order on every device
    while True:
        order = torch.randperm(len(x_train), generator=gen)
        if x_train.is_cuda:  # one copy per epoch that does not wait for the GPU (a copy
            # from pageable memory per step synchronised the stream every step)
            order = order.pin_memory().to(x_train.device, non_blocking=True)
        for pos in range(0, len(x_train) - batch + 1, batch):
            idx = order[pos:pos + batch]
            if shard is not None:
                idx = idx[shard[0]::shard[1]]
            yield rows(x_train, idx), y_train[idx], batch


def _global_batch(n: int, plan: Plan) -> tuple[int, bool]:
    """The batch every step takes, across all ranks: a multiple of the world size, so each
    rank's share is equal; and whether it is a whole split cut to that multiple (a full
    batch, or a split smaller than the batch, drops its last n % world samples), which
    every step then takes alike (see _memory_batches)."""
    whole = plan.full_batch or n < plan.batch_size
    batch = n if whole else plan.batch_size
    if plan.shard is not None:
        world = plan.shard[1]
        if whole:
            batch -= batch % world
        if batch == 0 or batch % world:
            raise ValueError(f"a batch of {batch} does not divide among {world} ranks (of "
                             f"{n} training samples): give train.batch_size a multiple of "
                             f"{world}")
    return batch, whole and batch < n


def rank_seed(seed: int, shard: tuple[int, int] | None) -> int:
    """The seed of a rank's random draws (augmentation, dropout): the cell's own on rank 0
    and alone, another on each other rank. With one seed everywhere each rank drew the same
    noise for its share of the batch: half the independent draws of one process."""
    if shard is None or shard[0] == 0:
        return seed
    # SeedSequence takes no negative entropy; a suite's seeds may be negative
    return int(np.random.SeedSequence([seed % 2**32, shard[0]]).generate_state(1)[0] >> 1)


class _StepLosses:
    """Each step's loss read as a number, and whether it was finite on every rank. Under DDP
    the loss is the mean over the ranks' shares (the global batch's, as one process would
    read it; rank 0's own share's was a half-batch's): non-finite where any rank's is, so
    every rank stops at the same step, or they would hang.

    On CUDA a step's loss is read once the next step is queued: reading it at once (.item(),
    a synchronisation) left the GPU idle while the CPU queued each next step. Where the clock
    stops (an evaluation, the last step) everything is read, so train_seconds holds the
    GPU's work. On the CPU there is nothing to overlap: each loss is read at once."""

    def __init__(self, lag: bool, shard: tuple[int, int] | None):
        self.lag, self.shard = lag, shard
        self.pending: list[tuple[int, torch.Tensor]] = []

    def add(self, step: int, loss: torch.Tensor) -> None:
        loss = loss.detach()
        if self.shard is not None:
            loss = loss.float().reshape(1).clone()
            torch.distributed.all_reduce(loss, op=torch.distributed.ReduceOp.SUM)
            loss /= self.shard[1]
        self.pending.append((step, loss))

    def read(self, everything: bool) -> list[tuple[int, float, bool]]:
        """(step, loss, finite) of the steps read now, oldest first."""
        keep = 1 if self.lag and not everything else 0
        ready = self.pending[:len(self.pending) - keep]
        self.pending = self.pending[len(ready):]
        out = []
        for step, loss in ready:
            value = loss.item()
            out.append((step, value, math.isfinite(value)))
        return out


def fit(model: nn.Module, data: Data, plan: Plan, backend: Backend, seed: int,
        eval_batch: int = 1000, net: nn.Module | None = None) -> Outcome:
    """Train `model` for plan.steps minibatch steps; evaluate every plan.eval_every steps.

    `model` is what training calls (a backend may wrap the network: DDP); `net` is the bare
    network, which evaluation calls (DDP's wrapper would sync buffers in forward).
    Batches come from in-memory tensors, or from a streamed split's DataLoader (the same
    order for the same seed).
    Evaluation time is excluded from train_seconds. A non-finite loss stops with diverged_at.
    """
    net = model if net is None else net
    dev = backend.device
    batch, whole = _global_batch(data.n_train, plan)
    draws = rank_seed(seed, plan.shard)
    if draws != seed:  # dropout and the like: this rank's own (the network is rank 0's)
        torch.manual_seed(draws)
    if data.stream is not None:  # decoded and augmented in worker processes
        loader = data.stream.batches(batch, seed, plan.shard, pin=dev.startswith("cuda"),
                                     draws=draws)
        batches = ((xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True), batch)
                   for xb, yb in loader)
    else:
        batches = _memory_batches(data, batch, seed, plan.shard, dev, whole)
    aug_gen = torch.Generator().manual_seed(draws + 1)  # CPU: same draws on every device
    # evaluated as the final figures are (cell.py): on the device, without autocast, so an
    # AMP cell's best-validation figures and curves read as its final ones do
    plain = on_device_of(net)
    scaler = backend.grad_scaler()
    task = tasks.of(data)

    losses = _StepLosses(lag=dev.startswith("cuda"), shard=plan.shard)
    curves, grad_norms = [], []
    best, diverged_at = None, None
    loss_sum, loss_count, samples, seconds = 0.0, 0, 0, 0.0
    model.train()
    for step in range(1, plan.steps + 1):
        t0 = time.perf_counter()
        xb, yb, n_global = next(batches)
        if plan.augment is not None:
            xb = plan.augment(xb, aug_gen)
        with backend.autocast():
            out = model(xb)
            target = task.target(yb, out)
            loss = plan.loss_fn(out.float(), target)
            if plan.loss_weight != 1.0:
                loss = plan.loss_weight * loss
            for term in plan.loss_terms:
                loss = loss + term(model, xb, yb, out)
        plan.optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(plan.optimizer)
        else:
            loss.backward()
        for hook in plan.before_step:
            hook(model)
        if scaler is not None:
            scaler.step(plan.optimizer)
            scaler.update()
        else:
            plan.optimizer.step()
        for hook in plan.after_step:
            hook(model)
        lr = float(plan.optimizer.param_groups[0]["lr"])  # this step's, before the schedule's
        if plan.schedule is not None and not plan.schedule_on_eval:
            plan.schedule.step()
        losses.add(step, loss)
        at_eval = step % plan.eval_every == 0 or step == plan.steps
        read = losses.read(everything=at_eval)
        seconds += time.perf_counter() - t0
        samples += n_global
        for read_step, value, finite in read:
            if not finite:
                diverged_at = read_step
                break
            loss_sum += value
            loss_count += 1
        if diverged_at is not None:
            break

        if at_eval:
            if plan.record_grad_norms:
                grad_norms.append({"step": step, "phase": plan.phase, **_layer_grad_norms(net)})
            val = score(predict(net, data.x_val, plain, eval_batch), data.y_val, data.task)
            test = score(predict(net, data.x_test, plain, eval_batch), data.y_test, data.task)
            curves.append({"phase": plan.phase, "step": step, "train_loss": loss_sum / loss_count,
                           "val_score": val, "seconds": seconds, "lr": lr})
            loss_sum, loss_count = 0.0, 0
            # best-validation checkpoint: chosen on validation only, test read beside it
            if not math.isnan(val) and (best is None or val > best["val_score"]):
                best = {"step": step, "val_score": val, "test_score": test}
            if plan.schedule is not None and plan.schedule_on_eval:
                plan.schedule.step(0.0 if math.isnan(val) else val)
    return Outcome(curves, step if plan.steps else 0, samples, seconds, diverged_at, best,
                   grad_norms)
