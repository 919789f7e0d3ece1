"""SingleFrameDataModule: the data side of one stage over the frame being compressed."""

from __future__ import annotations

import itertools
from typing import Iterable

import lightning.pytorch as pl


class SingleFrameDataModule(pl.LightningDataModule):
    """An endless stream of training items and one validation item per validation.

    The frame itself lives on the CoolChicModule as device buffers (every candidate, the
    quantisation search and the final test need it outside the data loop), so an item is
    a placeholder: nothing is collated, copied or moved per step, and the Trainer's
    ``max_steps`` alone decides how long a stage is. Being endless and stateless, the
    stream needs no state in a checkpoint for a stage to resume mid-way, and unlike a
    ``DataLoader`` it draws nothing from the global random generator when iterated, so
    an encode's random numbers do not depend on how often loaders were created.
    """

    def train_dataloader(self) -> Iterable[int]:
        return itertools.repeat(0)

    def val_dataloader(self) -> Iterable[int]:
        return (0,)
