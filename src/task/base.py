"""The task: what is specific to one problem. The Runner calls these methods and nothing else.

    batch = task.to_device(batch, device)          # tuples, dicts, NamedTuples of tensors
    loss, outputs = task.loss(model, batch)        # the forward pass and the loss
    meter = task.metrics()
    meter.update(loss, outputs, batch, task.batch_size(batch))  # keeps task.batch_values(...)
    meter.compute()                                # task.reduce -> sum over ranks -> summarize
                                                   # -> {"loss": ..., "acc": ..., "samples": n}

A task of your own subclasses `Task`, sets `metric_names`, and writes `loss`, plus
`batch_values` and `summarize` when it reports more than the loss (see classification.py).
Nothing here knows about configs, ranks, files or the loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from src.task.metrics import Meter


class Task:
    """The loss of a batch and the metrics that judge a model, for one kind of problem."""

    #: What `Meter.compute` reports, besides the sample count: each becomes `<split>/<name>`
    #: in metrics.csv, TensorBoard, the bars, results.json and sweep summaries.
    metric_names: tuple[str, ...] = ("loss",)

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, Any]:
        """Run the model on a batch; return the scalar loss and whatever `batch_sums` needs."""
        raise NotImplementedError(f"{type(self).__name__} must define loss(model, batch)")

    def batch_values(self, outputs: Any, batch: Any) -> dict[str, torch.Tensor]:
        """What to keep of one batch for the metrics, as device tensors: usually sums (squared
        errors), or cheap per-sample values that `reduce` turns into sums later. Runs on every
        training step (its results are detached): keep it to a tensor op or two."""
        return {}

    def reduce(self, values: Mapping[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The kept values of many batches -> totals that add up across ranks (on the device).

        By default each key's per-batch tensors are summed; sums of any shape work (a confusion
        matrix is a sum too)."""
        return {key: torch.stack(batches).sum(0) for key, batches in values.items()}

    def summarize(self, totals: Mapping[str, Any], samples: int) -> dict[str, float]:
        """Totals over every batch and rank -> the reported metrics (besides the loss)."""
        return {}

    def metrics(self) -> Meter:
        """A fresh accumulator; override to return any object with the same five methods."""
        return Meter(self)

    def to_device(self, batch: Any, device: torch.device) -> Any:
        """Move every tensor of a batch to the device (asynchronously from pinned memory); a
        CPU run has nothing to move (its loaders make CPU tensors)."""
        return batch if device.type == "cpu" else move_to_device(batch, device)

    def batch_size(self, batch: Any) -> int:
        """Samples in a batch: the length of its first tensor (shape only, no device sync)."""
        if type(batch) is tuple and isinstance(batch[0], torch.Tensor):  # the common pair, fast
            return len(batch[0])
        tensor = first_tensor(batch)
        if tensor is None:
            raise TypeError(f"a batch of {type(batch).__name__} holds no tensor")
        return len(tensor)

    def predict(self, model: nn.Module, inputs: torch.Tensor) -> list[dict[str, Any]]:
        """One row per input for `make predict`; tasks without a prediction say so."""
        raise NotImplementedError(f"{type(self).__name__} has no predict")


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Tensors anywhere in tuples, lists, NamedTuples and dicts; other values as they are."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a NamedTuple
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def first_tensor(batch: Any) -> torch.Tensor | None:
    if isinstance(batch, torch.Tensor):
        return batch
    values = batch.values() if isinstance(batch, Mapping) else batch
    if isinstance(values, (tuple, list)) or isinstance(batch, Mapping):
        for value in values:
            found = first_tensor(value)
            if found is not None:
                return found
    return None


def inputs_and_targets(
    batch: Any, input_key: str = "inputs", target_key: str = "targets"
) -> tuple[Any, Any]:
    """`(inputs, targets)` from a pair (tuple, list, NamedTuple) or from a dict's two keys."""
    if isinstance(batch, (tuple, list)) and len(batch) == 2:  # first: the common case, fast
        return batch[0], batch[1]
    if isinstance(batch, Mapping):
        missing = [k for k in (input_key, target_key) if k not in batch]
        if missing:
            raise KeyError(
                f"batch dict has keys {sorted(batch)}, not {missing}: "
                "set the task's input_key / target_key"
            )
        return batch[input_key], batch[target_key]
    raise TypeError(
        f"expected an (inputs, targets) pair or a dict batch, got {type(batch).__name__}"
        + (f" of {len(batch)}" if isinstance(batch, (tuple, list)) else "")
    )


if __name__ == "__main__":
    from typing import NamedTuple

    class Pair(NamedTuple):
        image: torch.Tensor
        label: torch.Tensor

    batch = {"inputs": Pair(torch.zeros(4, 2), torch.arange(4)), "targets": torch.ones(4)}
    moved = move_to_device(batch, torch.device("cpu"))
    print(type(moved["inputs"]).__name__, Task().batch_size(moved), inputs_and_targets(moved)[1])
