"""Rank awareness for `torchrun`: who am I, how many are we, and summing across ranks.

A single process is simply world_size 1; nothing else in the code branches on "is distributed"
except where it must (wrapping the model in DDP, reducing metrics).
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

import torch
import torch.distributed as dist

from src.common.errors import UserError


class DeviceError(UserError, ValueError):
    """The device asked for is not available on this machine."""


class DeviceChoice(str, Enum):
    auto = "auto"  # cuda, then mps, then cpu
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def world_from_env() -> World:
    """What `torchrun` (or srun) tells this process through its environment."""
    return World(
        rank=int(os.environ.get("RANK", 0)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
    )


def init_distributed(world: World, device: torch.device) -> None:
    """Join the process group: nccl between GPUs, gloo on CPU."""
    if not world.is_distributed or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = timedelta(minutes=30)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if attempt == "0" or "MASTER_ADDR" not in os.environ:
        dist.init_process_group(backend, timeout=timeout)
        return
    # A group torchrun restarted (--max-restarts) meets in the store the first attempt used:
    # keys of its own, or a rank may read a dead peer's address and fail to connect.
    agent_hosts = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world.world_size,
        is_master=world.rank == 0 and not agent_hosts,
        timeout=timeout,
    )
    prefixed = dist.PrefixStore(f"restart-{attempt}", store)
    dist.init_process_group(
        backend, store=prefixed, rank=world.rank, world_size=world.world_size, timeout=timeout
    )


def shutdown_distributed() -> None:
    """Collect the run's objects first: FSDP modules sit in reference cycles that would otherwise
    be freed during interpreter shutdown, with gloo work still attached (an abort at exit)."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Sum over ranks in place (identity for one process)."""
    if world.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_min(value: int, world: World, device: torch.device) -> int:
    """The smallest of every rank's `value` (the value itself for one process)."""
    if not world.is_distributed:
        return value
    tensor = torch.tensor([value], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


def any_rank(flag: torch.Tensor, world: World) -> bool:
    """True on every rank when `flag` is true on any rank, so that all ranks take one branch."""
    return bool(all_reduce_sum(flag.float().reshape(1), world).item() > 0)


def barrier(world: World) -> None:
    """Wait for every rank (no-op for one process), e.g. until rank 0 has written a file."""
    if world.is_distributed:
        dist.barrier()


def resolve_device(name: str, world: World) -> torch.device:
    """auto picks cuda, then mps, then cpu; under DDP each process takes its local GPU."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("device=cuda but no CUDA device is available (use device=auto)")
        torch.cuda.set_device(world.local_rank)
        torch.backends.cudnn.benchmark = True  # input shapes are static: pick kernels once
        return torch.device("cuda", world.local_rank)
    if name == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device=mps but MPS is not available (use device=auto)")
    return torch.device(name)


if __name__ == "__main__":
    world = world_from_env()
    print(world, "device:", resolve_device("auto", world))
