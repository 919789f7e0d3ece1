"""When to checkpoint an encode, when to stop it, and how checkpoint files are written.

One file per encode holds the latest checkpoint. Inside a training stage it is a Lightning
checkpoint (module, optimiser, loops, callbacks' ``state_dict``s) saved by the Trainer;
between stages, and during the network quantisation, it holds no Trainer state. Either
way the key :data:`CHECKPOINT_KEY` carries what the phase runner needs: where the encode
is (``position``), the runner's own state and every random generator.
"""

from __future__ import annotations

import copy
import enum
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from coolchic_pl.io.frame import atomic_write

CHECKPOINT_KEY = "coolchic_pl"
# Bumped whenever what is stored under CHECKPOINT_KEY changes meaning.
CHECKPOINT_VERSION = 4  # 2: candidate ids (competing decoders), RDOQ state; 3: one record per candidate; 4: seconds per kind of stage


class StopReason(enum.Enum):
    """Why an encode stops before its end; each has its own exit code in ``fit``."""

    INTERRUPT = "interrupted"  # SIGINT (Ctrl-C)
    TERMINATE = "terminated"  # SIGTERM
    REQUEUE = "requeue"  # the job's time is up (--job_duration_min, or SIGUSR1 from a scheduler)
    ABORT = "aborted"  # a second Ctrl-C: stop at once, without a new checkpoint


class EncodeStopped(Exception):
    """The encode stopped on request; what it had done up to its last checkpoint is on disk."""

    def __init__(self, reason: StopReason):
        super().__init__(reason.value)
        self.reason = reason


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be resumed from."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, writing through a temporary file in the target's
    own folder and renaming it: a kill at any moment leaves the previous checkpoint whole.
    (Lightning's default stages the file in the system temporary folder, and moving it
    from there is a copy, not a rename, when that folder is another file system.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        with atomic_write(path) as tmp:
            torch.save(checkpoint, tmp)


class Checkpointer:
    """The checkpoint policy of one encode.

    ``interval_s`` is the longest stretch of encoding between two checkpoints (0 turns the
    timed checkpoints off; stage ends are always saved). ``job_duration_s`` asks for a
    requeue once that much time has passed since this object was made, i.e. since this
    process started encoding. ``signal_reason`` reports a stop asked for by a signal.
    """

    def __init__(self, path: str | Path, interval_s: float = 60.0, job_duration_s: float | None = None,
                 signal_reason: Callable[[], StopReason | None] = lambda: None):
        self.path = Path(path)
        self.interval_s = interval_s
        self.signal_reason = signal_reason
        self.last_saved = time.monotonic()
        self.deadline = None if job_duration_s is None else self.last_saved + job_duration_s
        self.saving_s = 0.0  # time spent writing checkpoints, for the speed benchmark

    def moved_to(self, path: str | Path) -> "Checkpointer":
        """The same policy (interval, deadline, signals) for another checkpoint file: the
        parts of a video encode each keep their own checkpoint, under one job deadline."""
        other = copy.copy(self)
        other.path = Path(path)
        return other

    def stop_reason(self) -> StopReason | None:
        reason = self.signal_reason()
        if reason is None and self.deadline is not None and time.monotonic() >= self.deadline:
            reason = StopReason.REQUEUE
        return reason

    def due(self) -> bool:
        return self.interval_s > 0 and time.monotonic() - self.last_saved >= self.interval_s

    def at_safe_point(self, write: Callable[[], None], always: bool = False) -> None:
        """Called where the encode's state is whole: ``write`` a checkpoint if ``always``,
        if one is due or if a stop was asked for, then stop if it was."""
        reason = self.stop_reason()
        if always or reason is not None or self.due():
            write()
        if reason is not None:
            raise EncodeStopped(reason)

    def save(self, payload: dict[str, Any]) -> None:
        """Write a checkpoint that holds no Trainer state."""
        self._timed(lambda: AtomicCheckpointIO().save_checkpoint(payload, self.path))

    def save_trainer(self, trainer: Any) -> None:
        """Write the Trainer's checkpoint; callbacks add the runner's part in ``on_save_checkpoint``."""
        self._timed(lambda: trainer.save_checkpoint(self.path))

    def _timed(self, write: Callable[[], None]) -> None:
        started = time.monotonic()
        write()
        self.last_saved = time.monotonic()
        self.saving_s += self.last_saved - started

    def load(self) -> dict[str, Any] | None:
        """The latest checkpoint on the CPU (it may come from another device), or None."""
        if not self.path.exists():
            return None
        try:
            checkpoint = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch.load raises many types for a damaged or foreign file
            raise CheckpointError(f"{self.path}: not a readable checkpoint ({type(error).__name__}): "
                                  "remove it to start this encode over") from None
        if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
            raise CheckpointError(f"{self.path}: not a coolchic_pl checkpoint: remove it to start this encode over")
        if checkpoint[CHECKPOINT_KEY].get("version") != CHECKPOINT_VERSION:
            raise CheckpointError(f"{self.path}: written by another version of coolchic_pl: remove it to start this "
                                  "encode over")
        return checkpoint

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
