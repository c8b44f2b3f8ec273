"""Batches cut from tensors held in memory: no workers, no per-sample Python, no PIL.

When a dataset fits in memory (MNIST is 47 MB as uint8) this is 30-100x faster than a
`DataLoader` over per-sample transforms, and it makes the data order a pure function of
(seed, epoch), which is what exact resume and DDP sharding need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from src.common.errors import InvalidValue
from src.data.folds import carve_validation
from src.data.seeded import epoch_permutation

Batch = Any
Collate = Callable[[torch.Tensor, torch.Tensor], Batch]


class InMemoryLoader:
    """Iterate over (inputs, targets) batches of two aligned tensors.

    Training (`shuffle=True`): each epoch draws a permutation from a generator seeded with
    (seed, epoch). `batch_size` is the global batch; under DDP each of `world_size` ranks takes
    its own contiguous slice of every global batch, so the union over ranks is exactly the
    single-process batch and any world size that divides the batch gives the same data order.
    Partial last batches are dropped when shuffling, so every rank always gets the same count.

    Evaluation (`shuffle=False`): the samples are split into `world_size` contiguous shards with
    no padding, so summing metrics over ranks counts every sample exactly once.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        collate: Collate,
        *,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        if batch_size < 1 or (shuffle and batch_size % world_size):
            raise InvalidValue(
                f"batch_size {batch_size} must be a multiple of world_size {world_size}"
            )
        self.inputs, self.targets = inputs, targets
        self.batch_size, self.collate = batch_size, collate
        self.shuffle, self.seed = shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start_batch = 0  # first batch to yield this epoch (mid-epoch resume)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's permutation and where in it to begin."""
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        if self.shuffle:
            return len(self.inputs) // self.batch_size
        shard = len(self._eval_shard())
        return -(-shard // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        if not self.shuffle:
            yield from self._iter_eval()
            return
        order = self.permutation(self.epoch).to(self.inputs.device)
        local = self.batch_size // self.world_size
        for b in range(self.start_batch, len(self)):
            begin = b * self.batch_size + self.rank * local
            index = order[begin : begin + local]
            # index_select: about 3x faster than advanced indexing (inputs[index]) on CPU
            yield self.collate(
                self.inputs.index_select(0, index), self.targets.index_select(0, index)
            )

    def permutation(self, epoch: int) -> torch.Tensor:
        return epoch_permutation(len(self.inputs), self.seed, epoch)

    def _eval_shard(self) -> range:
        n, world = len(self.inputs), self.world_size
        return range(n * self.rank // world, n * (self.rank + 1) // world)

    def _iter_eval(self) -> Iterator[Batch]:
        shard = self._eval_shard()
        for begin in range(shard.start, shard.stop, self.batch_size):
            end = min(begin + self.batch_size, shard.stop)
            yield self.collate(self.inputs[begin:end], self.targets[begin:end])


def split_train_val(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    val_size: int,
    seed: int,
    folds: int = 0,
    fold: int = 0,
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Carve a fixed random validation set, or fold `fold` of `folds`, out of the training set
    (src/data/folds.py)."""
    train, val = carve_validation(len(inputs), val_size, seed, folds, fold)
    return (inputs[train], targets[train]), (inputs[val], targets[val])


if __name__ == "__main__":
    x, y = torch.arange(10).float().unsqueeze(1), torch.arange(10)
    loader = InMemoryLoader(x, y, batch_size=4, collate=lambda a, b: (a, b), shuffle=True)
    print([batch[1].tolist() for batch in loader], "(2 full batches of 4; the last 2 dropped)")
