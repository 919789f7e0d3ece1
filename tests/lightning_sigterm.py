"""A user callback for tests/test_interrupts.py, named in a config by its class_path."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl


class LightningSigtermAt(pl.Callback):
    """At the validation of iteration ``step``, once (``marker`` records it), sets the flag
    Lightning's SIGTERM handler sets and not the encode's own stop request: how a real
    SIGTERM leaves them when it lands after the encode's last look at an iteration. Lightning
    then raises ``SIGTERMException`` at the end of the iteration."""

    def __init__(self, step: int, marker: str):
        self.step = step
        self.marker = Path(marker)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.touch()
            trainer._signal_connector.received_sigterm = True  # what its handler sets
