"""Character-level text: a file -> one integer tensor -> (B, block_size + 1) windows.

The corpus is read once, its vocabulary is every character it holds (sorted), and it is encoded
once into an int64 tensor. Train, validation and test are contiguous slices of it, in that order.
A batch is a tensor of windows of `block_size + 1` characters: the model reads the first
`block_size` and predicts the last `block_size` (the task shifts them).

The default corpus needs no download: the text of Python's own `pydoc_data.topics` module (the
help pages of the language reference, about 465k characters), its topics joined in key order.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from src.data.idx import DataError
from src.data.in_memory import Batch, InMemoryLoader
from src.data.loaders import Loaders

DEFAULT_CORPUS = "pydoc_data.topics"  # what `path=None` reads


def read_corpus(path: str | Path | None) -> str:
    """The text of a UTF-8 file, or of pydoc's topics when `path` is None (or empty)."""
    if not path:
        from pydoc_data.topics import topics

        return "".join(topics[key] for key in sorted(topics))
    file = Path(path)
    if not file.is_file():
        raise DataError(f"data.path={path}: no such file")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"data.path={path} is not UTF-8 text ({err.reason} at byte {err.start})"
        ) from None
    if not text:
        raise DataError(f"data.path={path} is empty")
    return text


def encode(text: str, vocab: str) -> torch.Tensor:
    """Characters -> int64 ids, their positions in `vocab` (sorted); vectorised, no per-char
    Python. Characters that `vocab` lacks are named in one line."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.frombuffer(vocab.encode("utf-32-le"), dtype=np.uint32)
    ids = np.searchsorted(table, codes).clip(max=len(table) - 1)
    unknown = table[ids] != codes
    if unknown.any():
        missing = sorted({chr(c) for c in codes[unknown]})
        raise DataError(f"characters not in the vocabulary: {''.join(missing)!r}")
    return torch.from_numpy(ids.astype(np.int64))


def decode(ids: torch.Tensor | list[int], vocab: str) -> str:
    return "".join(vocab[i] for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids))


class WindowCut:
    """Window ids -> (B, block_size + 1) windows: window k starts at `offset + k * block_size`.

    Windows overlap by one character, so every character after the offset is a target exactly
    once per pass. The view over the tokens copies nothing; a batch is one `index_select`.
    """

    def __init__(self, tokens: torch.Tensor, block_size: int) -> None:
        self.tokens, self.block_size = tokens, block_size
        self.start_at(0)

    def start_at(self, offset: int) -> None:
        rest = self.tokens[offset:]
        if len(rest) <= self.block_size:  # not one window (unfold would raise)
            self.view = rest.new_zeros(0, self.block_size + 1)
        else:
            self.view = rest.unfold(0, self.block_size + 1, self.block_size)

    def __call__(self, ids: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        return self.view.index_select(0, ids)


class TextWindows(InMemoryLoader):
    """Batches of windows of one token tensor, with `InMemoryLoader`'s order, sharding and resume.

    Training: each epoch starts the windows at a random offset in [0, block_size) and permutes
    them, both drawn from (seed, epoch), so the order is a pure function of them and of nothing
    else (not the world size). The window count is the same for every offset, so every epoch has
    the same length. Evaluation: windows from offset 0, contiguous shards per rank, no duplicates.
    """

    def __init__(
        self,
        tokens: torch.Tensor,
        block_size: int,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        # Room for the largest offset (block_size - 1) when training; every window needs
        # block_size + 1 characters.
        room = len(tokens) - (block_size if shuffle else 1)
        ids = torch.arange(max(room // block_size, 0), device=tokens.device)
        cut = WindowCut(tokens, block_size)
        super().__init__(
            ids, ids, batch_size, cut, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size
        )
        self.cut = cut

    def offset(self, epoch: int) -> int:
        # Python's generator: a plain int, and a stream apart from the permutation's
        return random.Random(self.seed * 1_000_003 + epoch).randrange(self.cut.block_size)

    def __iter__(self) -> Iterator[Batch]:
        self.cut.start_at(self.offset(self.epoch) if self.shuffle else 0)
        return super().__iter__()


def split(tokens: torch.Tensor, val_fraction: float, test_fraction: float) -> list[torch.Tensor]:
    """Contiguous train, validation and test slices."""
    if min(val_fraction, test_fraction) <= 0 or val_fraction + test_fraction >= 1:
        raise DataError(
            f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} "
            "must be > 0 with a sum < 1"
        )
    n = len(tokens)
    val_start = n - round(n * (val_fraction + test_fraction))
    test_start = n - round(n * test_fraction)
    return [tokens[:val_start], tokens[val_start:test_start], tokens[test_start:]]


def build_loaders(
    path: str | None,
    block_size: int,
    batch_size: int,
    eval_batch_size: int,
    val_fraction: float,
    test_fraction: float,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
) -> Loaders:
    """Read and encode the corpus once, split it, and cut window loaders from the three parts."""
    text = read_corpus(path)
    vocab = "".join(sorted(set(text)))
    tokens = encode(text, vocab).to(device)  # 8 bytes a character: 3.7 MB for the default
    train, val, test = split(tokens, val_fraction, test_fraction)

    def loader(part: torch.Tensor, batch: int, shuffle: bool, name: str) -> TextWindows:
        windows = TextWindows(
            part, block_size, batch, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size
        )
        if len(windows) == 0:
            raise DataError(
                f"the {name} split of {path or DEFAULT_CORPUS} has {len(part)} characters: "
                f"too few for one batch of {batch} windows of data.block_size={block_size}"
            )
        return windows

    return Loaders(
        train=loader(train, batch_size, True, "training"),
        val=loader(val, eval_batch_size, False, "validation"),
        test=loader(test, eval_batch_size, False, "test"),
        info={"vocab_size": len(vocab), "vocab": vocab, "block_size": block_size},
    )


if __name__ == "__main__":
    loaders = build_loaders(None, 128, 64, 256, 0.05, 0.05)
    batch = next(iter(loaders.train))
    vocab = loaders.info["vocab"]
    print(
        f"{len(vocab)} characters, train batches {len(loaders.train)}, batch {tuple(batch.shape)}"
    )
    print(repr(decode(batch[0, :60], vocab)))
