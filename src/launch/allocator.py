"""Keep the memory a training step frees, instead of handing it back to the OS every step.

glibc's malloc serves large blocks (a batch's activations, its gradients) with `mmap` and unmaps
them when they are freed, and trims the top of its heap when enough is free. A training step
frees and re-allocates the same tens of MB each time, so every step pays the kernel to zero and
map those pages again: for the default CNN on the development machine, 1,000-5,000 page faults
per step. Raising both thresholds keeps those blocks in the process, as PyTorch's CUDA caching
allocator does on the GPU; a process's resident memory then stays at its peak.

Only glibc (Linux) is tuned; elsewhere this does nothing. Malloc settings the user gives win
(`MALLOC_*` variables, `GLIBC_TUNABLES`): glibc reads them at start, and this leaves them alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
KEEP_BYTES = 1 << 30  # blocks up to 1 GiB come from the heap; up to 1 GiB free stays mapped


def keep_freed_memory() -> bool:
    """Tell glibc to keep freed blocks of up to KEEP_BYTES; whether it was done."""
    chosen = "GLIBC_TUNABLES" in os.environ or any(k.startswith("MALLOC_") for k in os.environ)
    if not sys.platform.startswith("linux") or chosen:
        return False
    process = ctypes.CDLL(None)  # the symbols already loaded: libc's among them
    if not hasattr(process, "gnu_get_libc_version"):  # another C library (musl): leave it
        return False
    return bool(
        process.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)
        and process.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)
    )


if __name__ == "__main__":  # python -m src.launch.allocator [--default]
    import resource

    import torch

    kept = "--default" not in sys.argv and keep_freed_memory()  # before anything is allocated
    for _ in range(10):  # the first few map their memory either way (the heap grows)
        torch.ones(8 << 20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        torch.ones(8 << 20)  # allocated and freed like a step's activations
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20
    print(f"{faults:.0f} page faults per 32 MB tensor ({'kept' if kept else 'default'} malloc)")
