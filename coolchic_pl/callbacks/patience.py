"""Patience with reload-of-best, counted in iterations."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch


class PatienceWithReload(pl.Callback):
    """Track the best test loss and its parameters over a phase.

    The test loss before the first step is the initial best; after that only validations
    update it, so the best is always a state that was actually tested. At the top of
    every iteration, as in the reference, when more than ``patience`` iterations have
    passed since the last improvement, either reload the best parameters in place and
    carry on (``reload_and_continue``, used with cosine LR; optimiser moments are kept) or
    end the phase before that iteration runs, without another validation. Either way the
    phase ends on its best parameters, so a phase never increases the test loss.
    """

    def __init__(self, patience: int, reload_and_continue: bool, max_itr: int):
        self.patience = patience
        self.reload_and_continue = reload_and_continue
        self.max_itr = max_itr
        self.best_loss = float("inf")
        self.best_iteration = 0
        self.best_parameters: dict[str, torch.Tensor] = {}
        self.n_reloads = 0

    def _record(self, pl_module: pl.LightningModule, loss: float, iteration: int) -> None:
        if loss < self.best_loss:
            self.best_loss, self.best_iteration = loss, iteration
            self.best_parameters = {k: v.detach().clone() for k, v in pl_module.coolchic.state_dict().items()}

    def _restore(self, pl_module: pl.LightningModule) -> None:
        with torch.no_grad():
            for name, value in pl_module.coolchic.state_dict().items():
                value.copy_(self.best_parameters[name])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.best_parameters:
            self._record(pl_module, pl_module.evaluate()["loss"], 0)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        iteration = trainer.global_step
        if iteration - self.best_iteration <= self.patience or iteration >= self.max_itr:
            return
        if self.reload_and_continue:
            self._restore(pl_module)
            self.best_iteration = iteration
            self.n_reloads += 1
        else:
            pl_module.request_phase_end()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(pl_module, pl_module.last_metrics["loss"], trainer.global_step - 1)

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
