"""A user callback for tests/test_extensions.py, named in a config by its class_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl


class CountSteps(pl.Callback):
    """Counts the training steps of a whole encode, every stage, and writes the count to
    ``path`` after each: its state is the count, so a resumed encode must carry it on."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.count = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.count += 1
        self.path.write_text(str(self.count))

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.count = state_dict["count"]
