"""A user callback for tests/test_default_device.py: while a training or validation batch
runs, torch's default device is ``meta``, so a tensor made without the model's device
(``torch.tensor(x)``, ``torch.zeros(n)``) cannot mix with the model's and fails loudly.
On a CPU this is what a CUDA run would catch: such a tensor lands on the CPU there."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch


class MetaDefaultDevice(pl.Callback):
    """Holds ``torch.device("meta")`` as the default device from each batch's start hook to
    its end hook, so the step (forward, backward, clipping, optimiser) runs under it.
    ``guarded_batches`` counts the batches every instance guarded, for the test to check."""

    guarded_batches = 0

    def __init__(self) -> None:
        self._guard: torch.device | None = None

    def _enter(self) -> None:
        self._exit()
        self._guard = torch.device("meta")
        self._guard.__enter__()
        MetaDefaultDevice.guarded_batches += 1

    def _exit(self) -> None:
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.__exit__(None, None, None)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._enter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._exit()

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        self._enter()

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self._exit()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A batch the module skips (a phase ending early) gets a start hook but no end hook."""
        self._exit()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._exit()
