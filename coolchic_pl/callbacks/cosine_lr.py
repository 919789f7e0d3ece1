"""Cosine learning-rate decay stepped once per validation, as the reference steps it."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from torch.optim.lr_scheduler import CosineAnnealingLR

ETA_MIN = 1e-5


class CosineLR(pl.Callback):
    """lr_k = eta_min + (lr_0 - eta_min)(1 + cos(pi k / T_max)) / 2 after k validations,
    T_max = max_itr / freq_valid, eta_min = 1e-5 (also for phases starting at 1e-4)."""

    def __init__(self, max_itr: int, freq_valid: int):
        self.t_max = max_itr / freq_valid
        self.scheduler: CosineAnnealingLR | None = None
        self._pending_state: dict[str, Any] | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.scheduler = CosineAnnealingLR(trainer.optimizers[0], T_max=self.t_max, eta_min=ETA_MIN)
        if self._pending_state is not None:
            self.scheduler.load_state_dict(self._pending_state)
            for group, lr in zip(trainer.optimizers[0].param_groups, self.scheduler.get_last_lr()):
                group["lr"] = lr

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict() if self.scheduler else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_state = state_dict or None
