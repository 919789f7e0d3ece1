"""The local launcher: jobs spread over worker processes on this machine.

Each job runs in a fresh process (``spawn``: no torch state or threads inherited from
the parent), at most ``workers`` at a time. A process per job, not a long-lived pool, so
that a job killed by a signal or by the out-of-memory killer fails alone: the other jobs
run on and the next sweep resumes it from its checkpoint. With GPUs, each worker slot is
pinned to one GPU through ``CUDA_VISIBLE_DEVICES``.

Ctrl-C or SIGTERM to the sweep stops launching jobs and asks the running ones to
checkpoint and stop (SIGTERM forwarded, so that a signal sent to the sweep alone reaches
them too), then waits for them.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
from multiprocessing.connection import Connection, wait

import torch

from coolchic_pl.sweep.jobs import Job
from coolchic_pl.sweep.worker import FAILED, LOG_FILE, OnFinish, Outcome, execute
from coolchic_pl.training.checkpoint import StopReason


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The local launcher's options, for the benchmarks that run their encodes as a sweep."""
    parser.add_argument("--workers", type=int, default=None,
                        help="coolchic_pl encodes at once (default: one per GPU, else one per CPU core)")
    parser.add_argument("--threads-per-worker", type=int, default=None,
                        help="torch threads of each encode (default: the CPU cores shared out)")


def _worker_main(job: Job, threads: int, gpu: int | None, results: Connection) -> None:
    """Entry point of a worker process: output to the job's log, run, send the outcome."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    os.makedirs(job.job_dir, exist_ok=True)
    log_fd = os.open(os.path.join(job.job_dir, LOG_FILE), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    results.send(execute(job, threads))


def _death_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"the worker process was killed by {signal.Signals(-exitcode).name}; run the sweep again to resume"
    return f"the worker process exited with code {exitcode} without reporting a result"


class LocalLauncher:
    """``workers`` processes (default: one per GPU, else one per CPU core), each with
    ``threads_per_worker`` torch threads (default: the cores shared out). The default
    does not depend on how many jobs are left: the thread count changes an encode's
    floating-point result, and a job must encode the same way in every run of a sweep."""

    def __init__(self, workers: int | None = None, threads_per_worker: int | None = None):
        self.gpus = torch.cuda.device_count()
        self.workers = workers if workers is not None else self.gpus or usable_cpus()
        if self.workers < 1 or (threads_per_worker is not None and threads_per_worker < 1):
            raise ValueError(f"workers and threads per worker must be >= 1, got {workers} and {threads_per_worker}")
        self.threads = threads_per_worker or max(1, usable_cpus() // self.workers)
        self.stop_reason: StopReason | None = None

    def describe(self) -> str:
        gpus = f", pinned to {self.gpus} GPU(s)" if self.gpus else ""
        return f"local: {self.workers} worker(s) x {self.threads} thread(s){gpus}"

    def run(self, jobs: list[Job], on_finish: OnFinish) -> None:
        context = multiprocessing.get_context("spawn")
        pending = list(reversed(jobs))
        running: dict[Connection, tuple[Job, multiprocessing.process.BaseProcess, int]] = {}
        free_slots = list(reversed(range(self.workers)))

        def request_stop(signum: int, frame: object) -> None:
            if self.stop_reason is None:
                self.stop_reason = StopReason.INTERRUPT if signum == signal.SIGINT else StopReason.TERMINATE
            for _, process, _ in running.values():
                if process.pid is not None:
                    os.kill(process.pid, signal.SIGTERM)

        previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while running or (pending and self.stop_reason is None):
                while pending and free_slots and self.stop_reason is None:
                    job, slot = pending.pop(), free_slots.pop()
                    receiver, sender = context.Pipe(duplex=False)
                    gpu = slot % self.gpus if self.gpus else None
                    process = context.Process(target=_worker_main, args=(job, self.threads, gpu, sender),
                                              name=f"coolchic_pl-{job.job_id}")
                    process.start()
                    sender.close()  # the worker holds the only sending end: its death ends the pipe
                    running[receiver] = (job, process, slot)
                for receiver in wait(list(running)):
                    job, process, slot = running.pop(receiver)
                    try:
                        outcome = receiver.recv()
                    except EOFError:
                        outcome = None
                    process.join()
                    receiver.close()
                    free_slots.append(slot)
                    on_finish(job, outcome or Outcome(FAILED, _death_message(process.exitcode)))
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
