"""Any torch `Dataset` through a `DataLoader`, with the guarantees of `InMemoryLoader`.

    loader = SeededDataLoader(KeyedDataset(dataset, transform, seed), batch_size, shuffle=True,
                              seed=seed, rank=rank, world_size=world_size, options=options)

- order: a pure function of (seed, epoch), cut into global batches of which each rank takes its
  slice (`SeededBatchSampler`); evaluation shards without padding;
- resume: `set_epoch(epoch, start_batch)` (the Runner calls it) starts mid-epoch;
- augmentation: `KeyedDataset` runs a per-sample transform (torchvision v2, or any function
  drawing from torch's generator) with that generator seeded by (seed, epoch, sample index),
  so a resumed run draws the same crops; the epoch travels inside each key, so persistent
  workers need no state;
- speed: workers, pinned memory, persistent workers and prefetching from `DataLoaderOptions`.
Batches stay on the CPU: the Runner moves them to the device. `OnDevice` instead moves them
itself and finishes them there (e.g. one batched augmentation on the GPU).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from src.data.seeded import SampleKey, SeededBatchSampler, sample_seed


@dataclass
class DataLoaderOptions:
    """How a `DataLoader` feeds the loop (`data.loader.*` in the configs that use one)."""

    num_workers: int = 2  # worker processes preparing batches (0 = in the training process)
    pin_memory: bool = True  # page-locked batches: asynchronous copies to the GPU (CUDA only)
    persistent_workers: bool = True  # keep workers between epochs (no restart per epoch)
    prefetch_factor: int = 2  # batches each worker prepares ahead


class KeyedDataset(Dataset):
    """`dataset[index]`, looked up by `SampleKey`, then `transform(sample)` with torch's random
    generator seeded by (seed, epoch, index) and restored afterwards."""

    def __init__(
        self, dataset: Any, transform: Callable[[Any], Any] | None = None, seed: int = 0
    ) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey) -> Any:
        epoch, index = key
        sample = self.dataset[index]
        if self.transform is None:
            return sample
        with torch.random.fork_rng(devices=[]):  # the training process's own draws go on as before
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            return self.transform(sample)


class SeededDataLoader(DataLoader):
    """A plain `DataLoader` whose batches come from a `SeededBatchSampler`, plus `set_epoch`."""

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        collate_fn: Callable[[Any], Any] | None = None,
        options: DataLoaderOptions | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        options = options or DataLoaderOptions()
        sampler = SeededBatchSampler(
            len(dataset), batch_size, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size
        )
        workers = options.num_workers
        extra: dict[str, Any] = {}
        if workers > 0:  # DataLoader refuses these two without workers
            extra = {
                "persistent_workers": options.persistent_workers,
                "prefetch_factor": options.prefetch_factor,
            }
        super().__init__(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate_fn,
            num_workers=workers,
            pin_memory=options.pin_memory and torch.device(device).type == "cuda",
            # The workers' base seed is drawn from this generator, not from torch's global one,
            # so creating an iterator never shifts the training process's random numbers.
            generator=torch.Generator().manual_seed(seed),
            **extra,
        )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """The epoch's order, from its `start_batch`-th batch (read when iteration starts)."""
        self.batch_sampler.set_epoch(epoch, start_batch)  # type: ignore[union-attr]


class OnDevice:
    """A loader's batches moved to `device` (asynchronously from pinned memory), then
    `finish(*batch)` there. Tensors at `keep_on_cpu` positions stay where they are."""

    def __init__(
        self,
        loader: Any,
        device: torch.device,
        finish: Callable[..., Any],
        keep_on_cpu: tuple[int, ...] = (),
    ) -> None:
        self.loader, self.device, self.finish, self.keep_on_cpu = (
            loader,
            device,
            finish,
            keep_on_cpu,
        )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.loader.set_epoch(epoch, start_batch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            moved = [
                t if i in self.keep_on_cpu else t.to(self.device, non_blocking=True)
                for i, t in enumerate(batch)
            ]
            yield self.finish(*moved)


if __name__ == "__main__":
    from torch.utils.data import TensorDataset

    data = KeyedDataset(TensorDataset(torch.arange(10)), lambda s: s[0] + torch.rand(()))
    loader = SeededDataLoader(data, 4, shuffle=True, options=DataLoaderOptions(num_workers=0))
    loader.set_epoch(0, start_batch=1)
    print(f"{len(loader)} batches; from batch 1: {[b.floor().tolist() for b in loader]}")
