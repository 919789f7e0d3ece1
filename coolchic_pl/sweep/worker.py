"""One job of a sweep, run in the current process: the encode ``coolchic-fit`` would run,
with its outcome returned rather than turned into an exit code.

Every launcher ends up here, in a process of its own (a local worker, a SLURM task), so
a crash, a kill or a leak stays with its job. The encode's progress goes to
``encode.log`` in the job folder; an exclusive lock on that folder keeps two processes
(a re-run started while the first still runs, a requeued job beside a stale one) from
writing the same run folder.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from coolchic_pl.config import parse_config
from coolchic_pl.fit import BAD_INPUT_ERRORS, run_encode
from coolchic_pl.runtime import configure_cpu_allocator
from coolchic_pl.sweep.jobs import Job
from coolchic_pl.training.checkpoint import EncodeStopped, StopReason
from coolchic_pl.training.signals import StopSignals

DONE, SKIPPED, FAILED, STOPPED = "done", "skipped", "failed", "stopped"
LOG_FILE = "encode.log"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class Outcome:
    """How a job ended. ``message`` is the one-line error or stop reason; ``results`` the
    encode's results dictionary when it finished."""

    status: str
    message: str = ""
    results: dict[str, Any] | None = field(default=None, compare=False)
    stop_reason: StopReason | None = None


OnFinish = Callable[[Job, Outcome], None]  # what a launcher calls as each of its jobs ends


@contextmanager
def job_lock(job_dir: Path) -> Iterator[bool]:
    """Hold the job folder's lock for the block; yields False if another process holds it.
    The kernel drops the lock when its holder dies, however it dies."""
    with open(job_dir / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def execute(job: Job, threads: int | None = None,
            signal_reasons: dict[signal.Signals, StopReason] | None = None) -> Outcome:
    """Run (or resume, or read back) the job's encode with ``threads`` torch threads.

    Signals ask the encode to checkpoint and stop, as they do for ``coolchic-fit``;
    ``signal_reasons`` gives signals other meanings (see :class:`StopSignals`). A bad
    input or config is a failed job with its one-line error; so is any other exception,
    whose traceback goes to the job's log.
    """
    if threads:
        torch.set_num_threads(threads)
    configure_cpu_allocator()
    job_dir = Path(job.job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    with job_lock(job_dir) as locked, open(job_dir / LOG_FILE, "a", buffering=1) as log:
        if not locked:
            return Outcome(FAILED, f"{job_dir} is being encoded by another process")
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} job {job.job_id} ({job.name}) in process {os.getpid()}, "
                  f"{torch.get_num_threads()} thread(s)\n")
        with StopSignals(signal_reasons) as signals:
            try:
                results = run_encode(parse_config(list(job.argv)), stream=log, signal_reason=signals.reason)
            except BAD_INPUT_ERRORS as error:
                log.write(f"error: {error}\n")
                return Outcome(FAILED, str(error))
            except EncodeStopped as stop:
                log.write(f"stopped ({stop.reason.value}): the checkpoint is in {job.run_dir}\n")
                return Outcome(STOPPED, stop.reason.value, stop_reason=stop.reason)
            except Exception as error:  # a bug or a broken machine: this job fails, the sweep goes on
                traceback.print_exc(file=log)
                return Outcome(FAILED, f"{type(error).__name__}: {error} (traceback in {job_dir / LOG_FILE})")
    return Outcome(DONE, results=results)
