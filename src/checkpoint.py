"""Checkpoint files: written atomically, read back with one clear error when unusable.

Layout inside a run directory:
    checkpoints/last.pt            newest state (every checkpoint_every_n_steps and epoch end)
    checkpoints/best.pt            state at the best monitored value
    checkpoints/step-000123.pt     the newest `keep_last_k` step checkpoints
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from src.files import atomic_save

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt or does not fit the model."""


class Checkpointer:
    def __init__(self, directory: str | Path, keep_last_k: int = 1, enabled: bool = True) -> None:
        self.directory = Path(directory)
        self.keep_last_k = keep_last_k
        self.enabled = enabled  # False on DDP ranks other than 0, and in debug runs

    @property
    def last(self) -> Path:
        return self.directory / "last.pt"

    @property
    def best(self) -> Path:
        return self.directory / "best.pt"

    def save_last(self, payload: dict[str, Any], step: int) -> None:
        """Write last.pt; also keep it as step-<n>.pt when keep_last_k > 0."""
        if not self.enabled:
            return
        save_checkpoint(self.last, payload)
        if self.keep_last_k > 0:
            numbered = self.directory / f"step-{step:07d}.pt"
            numbered.unlink(missing_ok=True)
            try:
                os.link(self.last, numbered)  # same bytes, no second write
            except OSError:
                save_checkpoint(numbered, payload)
            for old in sorted(self.directory.glob("step-*.pt"))[: -self.keep_last_k]:
                old.unlink(missing_ok=True)

    def save_best(self, payload: dict[str, Any]) -> None:
        if self.enabled:
            save_checkpoint(self.best, payload)


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    payload = {"format_version": FORMAT_VERSION, **payload}
    atomic_save(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`, tensors only (no arbitrary pickles)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt: {reason})"
        ) from err
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} was not written by this template (format_version differs)")
    return payload


def load_model_weights(model: torch.nn.Module, weights: dict[str, Any], path: str | Path) -> None:
    """Strict load, turning shape and key mismatches into one readable line."""
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise CheckpointError(f"{path} does not fit this model: {detail[:300]}") from err


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Checkpointer(tmp, keep_last_k=2)
        for step in (1, 2, 3):
            ckpt.save_last({"step": step}, step)
        print(sorted(p.name for p in Path(tmp).iterdir()), load_checkpoint(ckpt.last)["step"])
