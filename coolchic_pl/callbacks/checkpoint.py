"""Lightning checkpoints inside a training stage, and stopping a stage on request."""

from __future__ import annotations

from typing import Any, Callable

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from coolchic_pl.config import TrainerPhase
from coolchic_pl.training.checkpoint import CHECKPOINT_KEY, Checkpointer


class StageCheckpoint(Checkpoint):
    """Saves the Trainer's checkpoint when the checkpointer says one is due, or a stop was
    asked for, and then ends the encode (:class:`~coolchic_pl.training.checkpoint.EncodeStopped`).

    It saves only where a resumed fit continues exactly: after an iteration that has no
    validation (``on_train_batch_end``), or after a validation has been seen by every
    other callback (``on_validation_end``; Lightning runs checkpoint callbacks last), and
    never at the last iteration of the stage, whose end (restoring the best parameters,
    quantising) belongs to the stage-end checkpoint. ``extras`` gives the runner's part
    of the checkpoint (its state, where it is, the random generators).

    Lightning's own SIGTERM handler makes it raise ``SIGTERMException`` at the very end of
    an iteration, after every callback: a signal that lands after this callback's last look
    at the iteration ends the fit there, and ``on_exception`` saves that finished iteration
    (Lightning resumes such a checkpoint at the next one, without repeating the validation).
    """

    def __init__(self, checkpointer: Checkpointer, phase: TrainerPhase, extras: Callable[[], dict[str, Any]]):
        self.checkpointer = checkpointer
        self.phase = phase
        self.extras = extras

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step % self.phase.freq_valid:
            self._save_if_asked(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save_if_asked(trainer)

    def _save_if_asked(self, trainer: pl.Trainer) -> None:
        if trainer.global_step < self.phase.max_itr:
            self.checkpointer.at_safe_point(lambda: self.checkpointer.save_trainer(trainer))

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.global_step < self.phase.max_itr:
            self.checkpointer.save_trainer(trainer)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.extras()
