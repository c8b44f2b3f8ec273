"""A second shape of data: synthetic variable-length sequences, padded per batch by the collate.

Task: is the sum of a sequence's values positive (binary classification)? The sequences are kept
as a list of tensors of different lengths; the loader slices *sample ids* (so ordering, resume
and DDP sharding work as for images) and `SequenceCollate` gathers the sequences of a batch and
pads them to the longest one, with a mask saying which steps are real.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from src.common.errors import InvalidValue
from src.data.in_memory import InMemoryLoader
from src.data.loaders import Loaders


class PaddedBatch(NamedTuple):
    """What a sequence model receives as `inputs`."""

    values: torch.Tensor  # (B, T, F) float32, zeros after each sequence's end
    mask: torch.Tensor  # (B, T) bool, True on real steps; T = the longest length in the batch


def pad_collate(sequences: list[torch.Tensor]) -> PaddedBatch:
    """Sequences of shape (L_i, F) -> one zero-padded (B, max L_i, F) tensor and its mask."""
    lengths = torch.tensor([len(s) for s in sequences])
    values = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True)
    mask = torch.arange(values.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
    return PaddedBatch(values, mask)


class SequenceCollate:
    """Sample ids (and their labels) -> (PaddedBatch, int64 labels), on the CPU: the Runner
    moves the batch to the device."""

    def __init__(self, sequences: list[torch.Tensor]) -> None:
        self.sequences = sequences

    def __call__(self, ids: torch.Tensor, labels: torch.Tensor) -> tuple[PaddedBatch, torch.Tensor]:
        return pad_collate([self.sequences[i] for i in ids.tolist()]), labels.long()


def make_sequences(
    n: int, min_len: int, max_len: int, features: int, seed: int
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """n sequences with values uniform in [-1, 1]; label 1 when the first feature sums > 0."""
    if not 1 <= min_len <= max_len:
        raise InvalidValue(f"need 1 <= min_len <= max_len (got {min_len}, {max_len})")
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=generator).tolist()
    sequences = [torch.rand(length, features, generator=generator) * 2 - 1 for length in lengths]
    labels = torch.tensor([int(s[:, 0].sum() > 0) for s in sequences])
    return sequences, labels


def build_loaders(
    n_train: int,
    n_val: int,
    n_test: int,
    min_len: int,
    max_len: int,
    features: int,
    batch_size: int,
    eval_batch_size: int,
    data_seed: int = 0,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
) -> Loaders:
    """Generate the three splits (fixed by data_seed) and loaders over their sample ids."""

    def loader(n: int, split_seed: int, batch: int, shuffle: bool) -> InMemoryLoader:
        sequences, labels = make_sequences(n, min_len, max_len, features, split_seed)
        collate = SequenceCollate(sequences)
        return InMemoryLoader(
            torch.arange(n),
            labels,
            batch,
            collate,
            shuffle=shuffle,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )

    base = data_seed * 3
    return Loaders(
        train=loader(n_train, base, batch_size, shuffle=True),
        val=loader(n_val, base + 1, eval_batch_size, shuffle=False),
        test=loader(n_test, base + 2, eval_batch_size, shuffle=False),
        info={"num_classes": 2, "in_features": features},
    )


if __name__ == "__main__":
    loaders = build_loaders(100, 20, 20, 3, 8, 1, batch_size=4, eval_batch_size=10)
    (values, mask), labels = next(iter(loaders.train))
    print(f"values {tuple(values.shape)}, lengths {mask.sum(1).tolist()}, labels {labels.tolist()}")
