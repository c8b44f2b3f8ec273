"""The Lightning side of `make bench`: the same model and batches under `lightning.Trainer`.

Lightning is an optional extra (`pip install -e ".[bench]"`); without it the bench says so.
Its per-step time is measured inside the fit (from the 10th batch to the last), so Lightning's
start-up and teardown are not counted against it.
"""

from __future__ import annotations

import os
import time
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import torch
from torch import nn


def lightning_seconds_per_step(model: nn.Module, loader: Any, folder: Path) -> float | None:
    try:
        import lightning as L
    except ImportError:
        return None

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model, self.criterion = model, nn.CrossEntropyLoss()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            inputs, targets = batch
            outputs = self.model(inputs)
            loss = self.criterion(outputs, targets)
            acc = (outputs.argmax(1) == targets).float().mean()
            self.log("train/loss", loss, prog_bar=True)
            self.log("train/acc", acc, prog_bar=True)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.start = 0.0
            self.end = 0.0

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, idx: int) -> None:
            if idx == 10:
                self.start = time.perf_counter()

        def on_train_batch_end(
            self, trainer: Any, module: Any, out: Any, batch: Any, idx: int
        ) -> None:
            self.end = time.perf_counter()

    clock = Clock()
    with open(os.devnull, "w") as sink, redirect_stdout(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = _trainer(L, folder, clock)
        trainer.fit(Module(), train_dataloaders=loader)
    return (clock.end - clock.start) / (len(loader) - 10)


def _trainer(L: Any, folder: Path, clock: Any) -> Any:
    """Lightning's defaults: progress bar, logger, checkpointing; only the model summary off."""
    return L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        default_root_dir=str(folder),
        callbacks=[clock],
        enable_model_summary=False,
    )
