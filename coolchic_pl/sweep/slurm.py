"""The SLURM launcher: the sweep's jobs as one job array, submitted through submitit.

Each array task runs :func:`coolchic_pl.sweep.worker.execute`, the same job function as
the local launcher. Time limits and pre-emption: SLURM sends submitit's warning signal
(USR2, ``signal_delay_s`` before the limit). The task treats it as a stop request, so the
encode checkpoints at its next safe point (the end of an iteration); the task then hands
over to submitit's own handler, which asks :class:`EncodeJob` for its resubmission
(:class:`submitit.helpers.Checkpointable`) and requeues it. The requeued task resumes
from the checkpoint. Lightning's SLURM auto-requeue (SIGUSR1) stays off, as it is for
every encode (``make_trainer``): submitit alone requeues. SIGTERM (``scancel``) checkpoints
and stops the job without a requeue; the next run of the sweep resumes it.

``cluster: local`` runs the same submission through submitit's local executor, to try a
SLURM config on one machine.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import submitit
from submitit.core.job_environment import JobEnvironment

from coolchic_pl.sweep.jobs import Job
from coolchic_pl.sweep.worker import FAILED, OnFinish, Outcome, execute
from coolchic_pl.training.checkpoint import StopReason


@dataclass
class SlurmSettings:
    """Where and how the array's tasks run (``--slurm configs/sweep/slurm.yaml``, ``--slurm.partition gpu``).

    Args:
        cluster: slurm, or local to run the same submission on this machine through submitit.
        partition: SLURM partition (null: the cluster's default).
        account: SLURM account to charge (null: the user's default).
        qos: SLURM quality of service (null: the default).
        timeout_min: Time limit of one task in minutes; a task that reaches it is checkpointed and requeued.
        max_num_timeout: Requeues on the time limit before a task is given up.
        signal_delay_s: Seconds between submitit's warning signal and the time limit (the checkpoint's margin).
        gpus_per_node: GPUs per task (one encode uses one).
        cpus_per_task: CPU cores per task, also the encode's torch threads.
        mem_gb: Memory per task in GB (null: the partition's default).
        array_parallelism: Most tasks of the array running at once.
        setup: Shell lines run before each task (module load, venv activation).
        additional_parameters: Other sbatch options, e.g. {constraint: a100}.
        poll_s: Seconds between two checks of the tasks' states.
    """

    cluster: Literal["slurm", "local"] = "slurm"
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    timeout_min: int = 240
    max_num_timeout: int = 20
    signal_delay_s: int = 120
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: Optional[float] = None
    array_parallelism: int = 64
    setup: list[str] = field(default_factory=list)
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    poll_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("timeout_min", "cpus_per_task", "array_parallelism"):
            if getattr(self, name) < 1:
                raise ValueError(f"slurm.{name} must be >= 1, got {getattr(self, name)}")
        if self.gpus_per_node < 0 or self.max_num_timeout < 0 or self.signal_delay_s < 0:
            raise ValueError("slurm.gpus_per_node, max_num_timeout and signal_delay_s must be >= 0")


class EncodeJob(submitit.helpers.Checkpointable):
    """The callable each array task runs; requeued with the same job on pre-emption."""

    def __init__(self, threads: int):
        self.threads = threads

    def __call__(self, job: Job) -> Outcome:
        warning = JobEnvironment._usr_sig()  # the signal submitit asked SLURM to send
        requeue = signal.getsignal(warning)  # submitit's checkpoint-and-requeue handler
        outcome = execute(job, self.threads, {warning: StopReason.REQUEUE})
        if outcome.stop_reason is StopReason.REQUEUE and callable(requeue):
            requeue(warning, None)  # the checkpoint is written: now let submitit requeue (it exits)
        return outcome


def _failure_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


class SlurmLauncher:
    def __init__(self, settings: SlurmSettings, folder: Path):
        self.settings = settings
        self.folder = folder
        self.stop_reason: StopReason | None = None

    def describe(self) -> str:
        s = self.settings
        where = "submitit local executor" if s.cluster == "local" else f"SLURM partition {s.partition or '(default)'}"
        return (f"{where}: array of tasks with {s.cpus_per_task} CPU(s), {s.gpus_per_node} GPU(s), "
                f"{s.timeout_min} min each, at most {s.array_parallelism} at once; logs in {self.folder}")

    def executor(self) -> submitit.AutoExecutor:
        s = self.settings
        executor = submitit.AutoExecutor(folder=self.folder, cluster=s.cluster, slurm_max_num_timeout=s.max_num_timeout,
                                         local_max_num_timeout=s.max_num_timeout)
        executor.update_parameters(
            name="coolchic_pl", timeout_min=s.timeout_min, gpus_per_node=s.gpus_per_node,
            cpus_per_task=s.cpus_per_task, mem_gb=s.mem_gb, slurm_partition=s.partition, slurm_account=s.account,
            slurm_qos=s.qos, slurm_array_parallelism=s.array_parallelism, slurm_signal_delay_s=s.signal_delay_s,
            slurm_setup=s.setup or None, local_setup=s.setup or None,
            slurm_additional_parameters=s.additional_parameters or None)
        return executor

    def run(self, jobs: list[Job], on_finish: OnFinish) -> None:
        submitted = dict(zip(self.executor().map_array(EncodeJob(self.settings.cpus_per_task), jobs), jobs))
        try:
            while submitted:
                for task in [t for t in submitted if t.done()]:
                    job = submitted.pop(task)
                    try:
                        outcome = task.result()
                    except Exception as error:  # the task died or raised: its log holds the rest
                        outcome = Outcome(FAILED, f"{_failure_line(error)} (task {task.job_id}, logs in {self.folder})")
                    on_finish(job, outcome)
                if submitted:
                    time.sleep(self.settings.poll_s)
        except KeyboardInterrupt:
            self.stop_reason = StopReason.INTERRUPT
