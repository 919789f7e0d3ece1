"""Signals that ask a running encode to checkpoint and stop.

The handlers only record the request: the encode acts on it at its next safe point (the
end of a training iteration or validation, a quantisation candidate, a stage end), where
its state is whole and a checkpoint can be written. A second Ctrl-C aborts at once.

Lightning's Trainer registers its own SIGTERM handler during ``fit`` and chains the one
installed here, so both see the signal; the encode's callback normally checkpoints and
stops before Lightning's own graceful exit (``SIGTERMException``) is raised.
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any

from coolchic_pl.training.checkpoint import EncodeStopped, StopReason

SIGNAL_REASONS = {signal.SIGINT: StopReason.INTERRUPT, signal.SIGTERM: StopReason.TERMINATE}
if hasattr(signal, "SIGUSR1"):
    # What SLURM sends ahead of a time limit with `#SBATCH --signal=USR1@<seconds>`.
    SIGNAL_REASONS[signal.SIGUSR1] = StopReason.REQUEUE


class StopSignals:
    """Context manager: while active, SIGINT, SIGTERM and SIGUSR1 request a stop.

    ``reasons`` replaces or adds signal meanings, e.g. a cluster job that must treat
    SIGTERM and its scheduler's warning signal as a requeue. The handled signals are
    unblocked on entry: a process can inherit them blocked, and a handler for a blocked
    signal never runs.
    """

    def __init__(self, reasons: dict[signal.Signals, StopReason] | None = None) -> None:
        self.requested: StopReason | None = None
        self.reasons = {**SIGNAL_REASONS, **(reasons or {})}
        self._previous: dict[int, Any] = {}

    def reason(self) -> StopReason | None:
        return self.requested

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        reason = self.reasons[signal.Signals(signum)]
        if self.requested is not None and reason is StopReason.INTERRUPT:
            raise EncodeStopped(StopReason.ABORT)
        if self.requested is None:
            self.requested = reason
            hint = " (Ctrl-C again to abort without it)" if reason is StopReason.INTERRUPT else ""
            # os.write, not print: the signal may arrive while sys.stderr is mid-write.
            os.write(2, f"{signal.Signals(signum).name}: checkpointing at the next safe point{hint}\n".encode())

    def __enter__(self) -> StopSignals:
        for signum in self.reasons:
            self._previous[signum] = signal.signal(signum, self._handle)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(self.reasons))
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
