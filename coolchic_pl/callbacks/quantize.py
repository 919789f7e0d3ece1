"""Network quantisation after a phase flagged ``quantize_model``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import lightning.pytorch as pl

from coolchic_pl.nnquant import ModuleQuantization, quantize_networks


class PostPhaseQuantization(pl.Callback):
    """Runs the greedy q-step search on the phase's final (best) parameters.

    It hooks ``on_fit_end``, which Lightning calls after every ``on_train_end``, so the
    patience callback has already restored the best parameters whatever the order of
    the callback list.
    """

    def __init__(self) -> None:
        self.quantization: dict[str, ModuleQuantization] = {}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.interrupted:
            return
        self.quantization = quantize_networks(pl_module.coolchic, pl_module.evaluate_loss)
        pl_module.quantization = dict(self.quantization)

    def state_dict(self) -> dict[str, Any]:
        return {name: asdict(q) for name, q in self.quantization.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.quantization = {name: ModuleQuantization(**q) for name, q in state_dict.items()}
