"""Data order and augmentation randomness as pure functions of (seed, epoch, sample).

Nothing here keeps a generator between calls: the batches of epoch e, and the random crop of
sample i in epoch e, are recomputed from the numbers alone. That is what lets a run resume
mid-epoch on the exact same pixels, and what makes every rank of a DDP run agree without
talking: each rank computes the same global order and takes its own slice of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import repeat

import numpy as np
import torch

MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment: consecutive counters land far apart


# What a seeded sampler hands a dataset: (epoch, sample index). Carrying the epoch in the key
# lets DataLoader workers (persistent ones too) draw the right augmentation with no state.
SampleKey = tuple[int, int]


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The training order of epoch `epoch`: the same on every rank and after any resume."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def _splitmix64(x: int) -> int:
    x = (x + _GOLDEN) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample's augmentation in one epoch (for `torch.manual_seed`)."""
    mixed = _splitmix64(_splitmix64(_splitmix64(seed & MASK64) ^ (epoch & MASK64)) ^ index)
    return mixed >> 1


def sample_uniforms(seed: int, epoch: int, indices: np.ndarray, draws: int) -> np.ndarray:
    """(len(indices), draws) floats in [0, 1): draw j of sample i depends on (seed, epoch, i, j)
    only, never on the batch or the rank a sample lands in. Vectorised splitmix64."""
    base = np.uint64(_splitmix64(_splitmix64(seed & MASK64) ^ (epoch & MASK64)))
    counter = indices.astype(np.uint64)[:, None] * np.uint64(draws) + np.arange(
        draws, dtype=np.uint64
    )
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps, as splitmix64 means it to
        x = (counter ^ base) + np.uint64(_GOLDEN)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53  # the top 53 bits: exact doubles


class SeededBatchSampler:
    """Batches of `SampleKey`s, (epoch, index), for a `DataLoader(batch_sampler=...)`, in the order
    `InMemoryLoader` uses.

    Training (`shuffle=True`): epoch e's order is `epoch_permutation(n, seed, e)`; `batch_size`
    is the global batch, each of `world_size` ranks takes its contiguous slice of every global
    batch, the partial last batch is dropped, and `set_epoch(e, start_batch)` resumes mid-epoch.
    Evaluation (`shuffle=False`): `world_size` contiguous shards with no padding, so metrics
    summed over ranks count every sample exactly once (unlike DistributedSampler's padding).
    The sampler is iterated in the main process: workers only ever see keys.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1 or (shuffle and batch_size % world_size):
            raise ValueError(
                f"batch_size {batch_size} must be a multiple of world_size {world_size}"
            )
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        if self.shuffle:
            return self.n // self.batch_size
        return -(-len(self._shard()) // self.batch_size)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        epoch = self.epoch
        if not self.shuffle:
            shard = self._shard()
            for begin in range(shard.start, shard.stop, self.batch_size):
                end = min(begin + self.batch_size, shard.stop)
                yield list(zip(repeat(epoch), range(begin, end)))
            return
        order = epoch_permutation(self.n, self.seed, epoch).tolist()
        local = self.batch_size // self.world_size
        for b in range(self.start_batch, len(self)):
            begin = b * self.batch_size + self.rank * local
            yield list(zip(repeat(epoch), order[begin : begin + local]))

    def _shard(self) -> range:
        n, world = self.n, self.world_size
        return range(n * self.rank // world, n * (self.rank + 1) // world)


if __name__ == "__main__":
    sampler = SeededBatchSampler(10, 4, shuffle=True, seed=0)
    print("epoch 0:", [[index for _, index in batch] for batch in sampler])
    print("uniforms of samples 3 and 7:", sample_uniforms(0, 0, np.array([3, 7]), 2).round(3))
