"""SingleFrameDataModule: one stage's worth of steps over the frame being compressed."""

from __future__ import annotations

import lightning.pytorch as pl
from torch.utils.data import DataLoader


class SingleFrameDataModule(pl.LightningDataModule):
    """Serves ``n_steps`` training items and one validation item per stage.

    The frame itself lives on the CoolChicModule as device buffers (every candidate,
    the quantisation search and the final test need it outside the data loop), so the
    items are just step indices: nothing is collated, copied or moved per step. A stage
    is exactly one epoch of ``n_steps`` batches.
    """

    def __init__(self, n_steps: int):
        super().__init__()
        if n_steps < 1:
            raise ValueError(f"a stage needs at least one step, got {n_steps}")
        self.n_steps = n_steps

    def train_dataloader(self) -> DataLoader:
        return DataLoader(range(self.n_steps), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(range(1), batch_size=None)
