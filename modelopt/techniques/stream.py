"""A training split streamed from files: decoding and augmentation in DataLoader worker
processes, batch by batch, for data that does not fit in memory.

The batch order is the in-memory path's (train.fit): a seeded permutation per epoch, the
tail dropped, rank r of a process group taking r::world of each global batch. So the same
seed visits the same images in the same batches whatever the number of workers; random
augmentation in a worker draws from a generator seeded from the run's seed (DataLoader's
`generator`; under DDP each rank's own seed, train.rank_seed), so it repeats for a given
number of workers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

DECODE_BATCH = 256  # images per worker task when a split is decoded into memory


def _start_method() -> str | None:
    """Workers fork where the platform can: a cell's process may have forkserver as its
    default (the runner's), and a forkserver child starting workers pays a fresh
    interpreter and torch import first (about 3 s each time here). None: the platform's."""
    import multiprocessing

    return "fork" if "fork" in multiprocessing.get_all_start_methods() else None


class EpochBatches(Sampler):
    """Endless global batches of positions 0..n-1: a fresh seeded permutation per epoch,
    the tail dropped; with `shard` (rank, world) this rank's share of each."""

    def __init__(self, n: int, batch: int, seed: int, shard: tuple[int, int] | None = None):
        self.n, self.batch, self.seed, self.shard = n, batch, seed, shard

    def __iter__(self) -> Iterator[list[int]]:
        gen = torch.Generator().manual_seed(self.seed)
        while True:
            order = torch.randperm(self.n, generator=gen)
            for pos in range(0, self.n - self.batch + 1, self.batch):
                idx = order[pos:pos + self.batch]
                if self.shard is not None:
                    idx = idx[self.shard[0]::self.shard[1]]
                yield idx.tolist()


@dataclass(frozen=True)
class Stream:
    """The training split of a file dataset: `augmented` and `plain` read the same files
    (with the training and the evaluation transforms); `indices` are this split's."""

    augmented: Dataset
    plain: Dataset
    indices: torch.Tensor
    workers: int

    def __len__(self) -> int:
        return len(self.indices)

    def take(self, positions: torch.Tensor) -> "Stream":
        """The sub-split at `positions` of this one (a validation split carved out)."""
        return replace(self, indices=self.indices[positions])

    def decode(self, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Images at `positions` (all by default) with the evaluation transform, in memory."""
        idx = self.indices if positions is None else self.indices[positions]
        return decode(self.plain, idx.tolist(), self.workers)

    def batches(self, batch: int, seed: int, shard: tuple[int, int] | None = None,
                pin: bool = False, draws: int | None = None
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Training batches (inputs, labels), endlessly; the workers stop with the iterator.
        `seed` orders the samples (alike on every rank); `draws` seeds the workers'
        augmentation (a rank's own, see train.rank_seed)."""
        loader = DataLoader(Subset(self.augmented, self.indices.tolist()),
                            batch_sampler=EpochBatches(len(self), batch, seed, shard),
                            num_workers=self.workers, pin_memory=pin,
                            generator=torch.Generator().manual_seed(
                                seed if draws is None else draws),
                            multiprocessing_context=_start_method() if self.workers else None)
        return iter(loader)


def decode(dataset: Dataset, idx: list[int], workers: int) -> torch.Tensor:
    """The inputs of `dataset` at `idx`, in order, as one tensor."""
    loader = DataLoader(Subset(dataset, idx), batch_size=DECODE_BATCH, num_workers=workers,
                        multiprocessing_context=_start_method() if workers else None)
    parts = [x for x, _ in loader]
    return torch.cat(parts) if parts else torch.zeros(0)
