"""Linear schedules of the softround temperature and of the noise parameter."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch


class LinearSchedule(pl.Callback):
    """value(c) = start + (end - start) c / max_itr, written in place into the module's
    0-d tensor ``attribute``.

    As in the reference, the value is set for c = 0 when training starts and then only
    re-evaluated after each validation, with c the 0-based index of the iteration that was
    just validated: it is piecewise constant over blocks of ``freq_valid`` iterations.
    """

    def __init__(self, attribute: str, start: float, end: float, max_itr: int):
        self.attribute = attribute
        self.start, self.end, self.max_itr = start, end, max_itr
        self.value = start

    @property
    def state_key(self) -> str:
        return f"LinearSchedule[{self.attribute}]"

    def value_at(self, iteration: int) -> float:
        return self.start + (self.end - self.start) * iteration / self.max_itr

    def _write(self, pl_module: pl.LightningModule) -> None:
        with torch.no_grad():
            getattr(pl_module, self.attribute).fill_(self.value)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The start value in a fresh phase; the value reached so far in a resumed one.
        self._write(pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.value = self.value_at(trainer.global_step - 1)
        self._write(pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.value = state_dict["value"]
