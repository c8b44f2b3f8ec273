"""How a model is spread over the ranks of a run (`runner.strategy`): the one place that wraps
it, silences gradient syncs during accumulation, readies it for evaluation, and reads and writes
its state. The Runner and the checkpoint code call these methods and never ask which it is.

    Replicated   one process, or DDP: every rank holds the whole model, gradients are averaged;
                 a checkpoint is one file that rank 0 writes (src/training/checkpoint.py)
    Sharded      FSDP2 (`fully_shard`): parameters, gradients and optimizer state are split
                 across the ranks; a checkpoint is a DCP folder every rank writes its part of
                 (src/training/sharded.py), which loads on any number of ranks
Either one reads both kinds of checkpoint, so a run can change strategy on resume.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.nn.parallel import DistributedDataParallel

from src.launch.distributed import DeviceError, World
from src.training.checkpoint import (
    Checkpointer,
    CheckpointError,
    load_checkpoint,
    load_model_weights,
)
from src.training.options import FSDPOptions, Precision, StrategyChoice
from src.training.sharded import ShardedCheckpointer, load_model, load_tensors, merge, split_tensors

log = logging.getLogger(__name__)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_FULL = StateDictOptions(full_state_dict=True)


def unwrapped(model: nn.Module) -> nn.Module:
    """The model without DDP's or torch.compile's wrapper: the names checkpoints use."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


class Replicated:
    """One process, or DDP under torchrun."""

    def __init__(self, world: World | None = None) -> None:
        self.world = world or World()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if not self.world.is_distributed:
            return model
        return DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def no_sync(self, model: nn.Module) -> AbstractContextManager[Any] | None:
        """A context for backward passes whose gradients must not be reduced yet."""
        no_sync = getattr(model, "no_sync", None)  # DDP's
        return no_sync() if no_sync is not None else None

    def evaluation(self, model: nn.Module) -> AbstractContextManager[Any]:
        return nullcontext()

    def checkpointer(self, directory: Path, keep_last_k: int, enabled: bool) -> Any:
        return Checkpointer(directory, keep_last_k, enabled and self.world.is_main)

    def state_dicts(self, model: nn.Module, optimizer: Any) -> tuple[dict, dict]:
        """(model, optimizer) state for a checkpoint."""
        return model.state_dict(), optimizer.state_dict()

    def load_state(
        self, model: nn.Module, optimizer: Any, payload: dict[str, Any], source: str
    ) -> None:
        """The model's weights, and the optimizer's state unless it is None (here or saved)."""
        model = unwrapped(model)
        if "shards" in payload:  # each rank reads whole tensors from the shards, on its own
            _load_sharded(model, optimizer, payload, collective=False)
            return
        load_model_weights(model, payload["model"], source)
        if optimizer is not None and payload["optimizer"] is not None:
            optimizer.load_state_dict(payload["optimizer"])

    def load_evaluation_weights(self, model: nn.Module, path: Path) -> None:
        """A checkpoint's evaluation weights (the EMA average when the run kept one)."""
        load_model(unwrapped(model), load_checkpoint(path), path)


class Sharded(Replicated):
    """FSDP2: each module whose class is named in `shard_modules`, then the root, is sharded
    over all ranks. On one process the model stays plain and checkpoints are still DCP folders
    (so a one-process run continues on several ranks, and the other way round)."""

    def __init__(self, world: World, options: FSDPOptions) -> None:
        super().__init__(world)
        self.options = options

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if not self.world.is_distributed:
            return model
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

        options, root = self.options, unwrapped(model)
        if options.cpu_offload and device.type != "cuda":  # FSDP pins the shards for the GPU
            raise DeviceError(f"runner.fsdp.cpu_offload=true needs device=cuda (got {device})")
        mesh = init_device_mesh(device.type, (self.world.world_size,))
        precision = MixedPrecisionPolicy(
            param_dtype=DTYPES[str(Precision(options.param_dtype).value)],
            reduce_dtype=DTYPES[str(Precision(options.reduce_dtype).value)],
        )
        kwargs: dict[str, Any] = {"mesh": mesh, "mp_policy": precision}
        if options.cpu_offload:
            kwargs["offload_policy"] = CPUOffloadPolicy()
        names = set(options.shard_modules)
        blocks = [m for m in root.modules() if type(m).__name__ in names and m is not root]
        for block in reversed(blocks):  # innermost first: a block's parent shards what remains
            fully_shard(block, reshard_after_forward=options.reshard_after_forward, **kwargs)
        fully_shard(root, **kwargs)
        log.info(
            "fsdp: %d modules (%s) and the root sharded over %d ranks",
            len(blocks),
            ", ".join(sorted(names)) or "none named",
            self.world.world_size,
        )
        return model

    def no_sync(self, model: nn.Module) -> AbstractContextManager[Any] | None:
        return _gradient_sync_off(model) if self.world.is_distributed else None

    def evaluation(self, model: nn.Module) -> AbstractContextManager[Any]:
        if not self.world.is_distributed:
            return nullcontext()
        return _gathered(unwrapped(model), self.options.reshard_after_forward)

    def checkpointer(self, directory: Path, keep_last_k: int, enabled: bool) -> Any:
        return ShardedCheckpointer(directory, keep_last_k, enabled, self.options.async_save)

    def state_dicts(self, model: nn.Module, optimizer: Any) -> tuple[dict, dict]:
        """Each rank's shards, the optimizer's keyed by parameter name (as DCP reshards them)."""
        return get_state_dict(model, optimizer)

    def load_state(
        self, model: nn.Module, optimizer: Any, payload: dict[str, Any], source: str
    ) -> None:
        model = unwrapped(model)
        if "shards" in payload:
            _load_sharded(model, optimizer, payload, collective=self.world.is_distributed)
            return
        # A single-file checkpoint (one process or DDP): full tensors, each rank takes its shard.
        try:
            if optimizer is None or payload["optimizer"] is None:
                set_model_state_dict(model, payload["model"], options=_FULL)
                return
            optim_state = _by_name(model, payload["optimizer"])
            set_state_dict(
                model,
                optimizer,
                model_state_dict=payload["model"],
                optim_state_dict=optim_state,
                options=_FULL,
            )
        except (RuntimeError, KeyError, ValueError) as err:
            raise CheckpointError(f"{source} does not fit this model: {err}") from err

    def load_evaluation_weights(self, model: nn.Module, path: Path) -> None:
        self.load_state(model, None, load_checkpoint(path), str(path))


def build_strategy(choice: StrategyChoice | str, options: Any, world: World) -> Replicated:
    """`runner.strategy` and `runner.fsdp` (an FSDPOptions) -> the strategy of this run."""
    if StrategyChoice(choice) == StrategyChoice.fsdp:
        return Sharded(world, options)
    return Replicated(world)


def _load_sharded(
    model: nn.Module, optimizer: Any, payload: dict[str, Any], collective: bool
) -> None:
    """Fill templates of this model's (and optimizer's) state from a DCP folder, then load them:
    the optimizer's tensors from the shards, its other values from meta.pt."""
    if optimizer is None or payload.get("optimizer") is None:
        template: dict[str, Any] = {"model": get_model_state_dict(model)}
    else:
        model_state, optim_state = get_state_dict(model, optimizer)  # allocates Adam's moments
        template = {"model": model_state, "optimizer": optim_state}
    tensors, _ = split_tensors(template)
    load_tensors(payload["shards"], tensors, collective)
    if "optimizer" not in template:
        set_model_state_dict(model, tensors["model"])
        return
    saved = merge(tensors["optimizer"], payload["optimizer"])
    set_state_dict(model, optimizer, model_state_dict=tensors["model"], optim_state_dict=saved)


def _by_name(model: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    """`optimizer.state_dict()` (parameters by position) keyed by parameter name instead."""
    names = [name for name, _ in model.named_parameters()]
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]
    return {"state": {names[i]: s for i, s in state["state"].items()}, "param_groups": groups}


@contextmanager
def _gradient_sync_off(model: nn.Module) -> Iterator[None]:
    """FSDP2's no_sync: gradients accumulate unreduced until a backward with sync back on."""
    root = unwrapped(model)
    root.set_requires_gradient_sync(False)  # type: ignore[operator]
    try:
        yield
    finally:
        root.set_requires_gradient_sync(True)  # type: ignore[operator]


@contextmanager
def _gathered(root: nn.Module, reshard_after_forward: bool) -> Iterator[None]:
    """Evaluation with every parameter gathered once: forwards then take no collective, so the
    ranks may run different numbers of batches (evaluation shards are not padded). Costs the
    whole model's parameters on each rank while it lasts."""
    from torch.distributed.fsdp import FSDPModule

    modules = [m for m in root.modules() if isinstance(m, FSDPModule)]
    for module in modules:
        module.set_reshard_after_forward(False, recurse=False)
        module.unshard()
    try:
        yield
    finally:
        for module in modules:
            module.reshard()
            # the root keeps its gathered parameters for the backward (FSDP2's own choice)
            keep = reshard_after_forward and module is not root
            module.set_reshard_after_forward(keep, recurse=False)


if __name__ == "__main__":
    strategy = build_strategy("fsdp", FSDPOptions(), World())
    model = strategy.wrap(nn.Linear(4, 2), torch.device("cpu"))
    optimizer = torch.optim.AdamW(model.parameters())
    weights, moments = strategy.state_dicts(model, optimizer)
    print(type(strategy).__name__, sorted(weights), sorted(moments))
