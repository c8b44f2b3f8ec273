"""`Loaders`: what every dataset's `build_loaders(...)` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Loaders:
    """The three splits of a run, and what the data says about itself.

    A loader is any iterable of batches with `len()`; the Runner calls `set_epoch(epoch,
    start_batch)` on those that have it, which is how a seeded order resumes mid-epoch. `info`
    holds plain facts (num_classes, in_channels, image_size, in_features, ...): a model field
    left `None` in its config is filled from it, and checkpoints keep it for predict.
    """

    train: Any
    val: Any
    test: Any
    info: dict[str, Any] = field(default_factory=dict)
