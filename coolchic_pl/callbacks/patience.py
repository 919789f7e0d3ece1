"""Patience with reload-of-best, counted in iterations."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch


class PatienceWithReload(pl.Callback):
    """Track the best test loss and its parameters over a phase.

    The test loss before the first step is the initial best. When more than ``patience``
    iterations have passed since the last improvement, either reload the best parameters
    in place and carry on (``reload_and_continue``, used with cosine LR; optimiser moments
    are kept) or stop the phase. Either way the phase ends on its best parameters, so a
    phase never increases the test loss. The check belongs at the top of an iteration; it
    runs at the end of the previous one, or after the validation when there is one.
    """

    def __init__(self, patience: int, reload_and_continue: bool, freq_valid: int, max_itr: int):
        self.patience = patience
        self.reload_and_continue = reload_and_continue
        self.freq_valid, self.max_itr = freq_valid, max_itr
        self.best_loss = float("inf")
        self.best_iteration = 0
        self.best_parameters: dict[str, torch.Tensor] = {}
        self.n_reloads = 0

    def _is_validation_step(self, iteration: int) -> bool:
        return (iteration + 1) % self.freq_valid == 0 or iteration + 1 == self.max_itr

    def _record(self, pl_module: pl.LightningModule, loss: float, iteration: int) -> None:
        if loss < self.best_loss:
            self.best_loss, self.best_iteration = loss, iteration
            self.best_parameters = {k: v.detach().clone() for k, v in pl_module.coolchic.state_dict().items()}

    def _restore(self, pl_module: pl.LightningModule) -> None:
        with torch.no_grad():
            for name, value in pl_module.coolchic.state_dict().items():
                value.copy_(self.best_parameters[name])

    def _check(self, trainer: pl.Trainer, pl_module: pl.LightningModule, next_iteration: int) -> None:
        if next_iteration - self.best_iteration <= self.patience or next_iteration >= self.max_itr:
            return
        if self.reload_and_continue:
            self._restore(pl_module)
            self.best_iteration = next_iteration
            self.n_reloads += 1
        else:
            trainer.should_stop = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.best_parameters:
            self._record(pl_module, pl_module.evaluate()["loss"], 0)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._is_validation_step(batch_idx):
            self._check(trainer, pl_module, batch_idx + 1)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        iteration = trainer.global_step - 1
        self._record(pl_module, pl_module.last_metrics["loss"], iteration)
        self._check(trainer, pl_module, iteration + 1)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore(pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"best_loss": self.best_loss, "best_iteration": self.best_iteration,
                "best_parameters": self.best_parameters, "n_reloads": self.n_reloads}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_loss = state_dict["best_loss"]
        self.best_iteration = state_dict["best_iteration"]
        self.best_parameters = state_dict["best_parameters"]
        self.n_reloads = state_dict["n_reloads"]
