"""DDP against FSDP on the same model: memory per rank and time per step.

    python -m src.tools.bench.sharding [--nproc 2] [--steps 6] [--rounds 5]
    make bench-sharding

Starts `torchrun --nproc_per_node <nproc>` on this module; every rank builds the char transformer
(about 15 M parameters) twice, once wrapped by each strategy (src/training/strategy.py), and
trains both with AdamW on the same random batches. Memory is what the training state holds on one
rank after a step: its parameters, their gradients (counted after the backward, before they are
freed) and the optimizer state, all counted from the tensors themselves (a DTensor counts its
local shard). The transient buffers of a step (DDP's gradient buckets, FSDP's gathered block) are
not counted. Time per step is the median over rounds that alternate the two (DDP, FSDP, DDP, ...),
so a drift in machine speed hits both alike. Rank 0 prints the table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from src.launch.distributed import init_distributed, shutdown_distributed, world_from_env
from src.training.strategy import FSDPOptions, Replicated, Sharded

VOCAB, CONTEXT, BATCH = 96, 128, 4  # batch per rank
MODULE = "src.tools.bench.sharding"


def build_model() -> nn.Module:
    from src.model.char_transformer import CharTransformer

    torch.manual_seed(0)
    return CharTransformer(VOCAB, CONTEXT, n_layer=8, n_head=6, n_embd=384)


def local_bytes(tensors: Any) -> int:
    """Bytes this rank holds for the tensors (a DTensor's own shard only)."""
    total = 0
    for tensor in tensors:
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        total += local.numel() * local.element_size()
    return total


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor) -> int:
    """One AdamW step; the bytes of the gradients while they exist."""
    logits = model(ids[:, :-1])
    F.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1)).backward()
    grads = local_bytes(p.grad for p in model.parameters() if p.grad is not None)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grads


def measure(steps: int, rounds: int) -> dict[str, dict[str, float]]:
    world = world_from_env()
    device = torch.device("cpu")
    init_distributed(world, device)
    strategies = {
        "ddp": Replicated(world),
        "fsdp": Sharded(world, FSDPOptions(shard_modules=["Block"])),
    }
    generator = torch.Generator().manual_seed(world.rank)
    batches = [torch.randint(0, VOCAB, (BATCH, CONTEXT + 1), generator=generator)]
    results: dict[str, dict[str, float]] = {}
    parts: dict[str, tuple[nn.Module, torch.optim.Optimizer]] = {}
    size = sum(p.numel() for p in build_model().parameters())
    for name, strategy in strategies.items():
        model = strategy.wrap(build_model(), device)
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        grads = train_step(model, optimizer, batches[0])  # allocates the optimizer state
        states = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
        params = local_bytes(model.parameters())
        optim = local_bytes(states)
        results[name] = {"params": params, "grads": grads, "optimizer": optim}
        results[name]["total"] = params + grads + optim
        results[name]["parameters"] = size
        parts[name] = (model, optimizer)
    times: dict[str, list[float]] = {name: [] for name in strategies}
    for _ in range(rounds):
        for name, (model, optimizer) in parts.items():
            start = time.perf_counter()
            for _ in range(steps):
                train_step(model, optimizer, batches[0])
            times[name].append((time.perf_counter() - start) / steps)
    for name in strategies:
        results[name]["step_s"] = statistics.median(times[name])
    shutdown_distributed()
    return results


def table(results: dict[str, dict[str, float]], nproc: int) -> str:
    ddp, fsdp = results["ddp"], results["fsdp"]
    mb = 1024 * 1024
    lines = [
        f"char transformer, {ddp['parameters'] / 1e6:.1f} M parameters, AdamW, {nproc} CPU ranks",
        "| per rank | DDP | FSDP | FSDP / DDP |",
        "| --- | --- | --- | --- |",
    ]
    for key in ("params", "grads", "optimizer", "total"):
        lines.append(
            f"| {key} MB | {ddp[key] / mb:.1f} | {fsdp[key] / mb:.1f} | "
            f"{fsdp[key] / ddp[key]:.0%} |"
        )
    lines.append(
        f"| step ms | {ddp['step_s'] * 1e3:.0f} | {fsdp['step_s'] * 1e3:.0f} | "
        f"{fsdp['step_s'] / ddp['step_s']:.2f}x |"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2, help="ranks (CPU processes, gloo)")
    parser.add_argument("--steps", type=int, default=6, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per strategy (median)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        results = measure(args.steps, args.rounds)
        if world_from_env().is_main:
            print(table(results, world_from_env().world_size))
        return
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    command = [torchrun, "--standalone", "--nproc_per_node", str(args.nproc), "-m", MODULE]
    command += ["--worker", "--steps", str(args.steps), "--rounds", str(args.rounds)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    print("+ " + " ".join(command), flush=True)
    sys.exit(subprocess.call(command, env=env))


if __name__ == "__main__":
    main()
