"""Running a job list on a launcher, and what its finished jobs add up to.

Finished jobs are read back here, in the sweep's own process, so a re-run of a finished
sweep starts no worker at all. The other jobs go to the launcher, whose workers resume
any that an earlier run left with a checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, TextIO

from coolchic_pl.bench.formats import coolchic_point, write_results
from coolchic_pl.sweep.jobs import Job, config_label
from coolchic_pl.sweep.report import Progress
from coolchic_pl.sweep.worker import DONE, SKIPPED, OnFinish, Outcome
from coolchic_pl.training.checkpoint import StopReason

CODEC = "coolchic_pl"


class Launcher(Protocol):
    stop_reason: StopReason | None

    def describe(self) -> str: ...

    def run(self, jobs: list[Job], on_finish: OnFinish) -> None: ...


def run_sweep(jobs: list[Job], launcher: Launcher, stream: TextIO | None = None) -> dict[str, Outcome]:
    """Every job's outcome by job id (jobs the launcher never finished are missing)."""
    progress = Progress(len(jobs), stream)
    outcomes: dict[str, Outcome] = {}

    def on_finish(job: Job, outcome: Outcome) -> None:
        outcomes[job.job_id] = outcome
        progress.report(job, outcome)

    to_run = []
    for job in jobs:
        results = job.finished_results()
        if results is None:
            to_run.append(job)
        else:
            on_finish(job, Outcome(SKIPPED, "already encoded", results))
    try:
        if to_run:
            print(f"{len(to_run)} job(s) to run on {launcher.describe()}", file=progress.stream, flush=True)
            launcher.run(to_run, on_finish)
    finally:
        progress.close()
    return outcomes


def codec_name(config: str, configs: list[str]) -> str:
    return CODEC if len(configs) == 1 else f"{CODEC} {config_label(config)}"


def configurations(jobs: list[Job]) -> list[str]:
    return list(dict.fromkeys(job.config for job in jobs))


def coolchic_points(jobs: list[Job], outcomes: dict[str, Outcome]) -> dict[str, dict[str, list[dict]]]:
    """``points[codec][image]`` of the finished jobs: one codec per configuration."""
    configs = configurations(jobs)
    points: dict[str, dict[str, list[dict]]] = {codec_name(c, configs): {} for c in configs}
    for job in jobs:
        outcome = outcomes.get(job.job_id)
        if outcome is not None and outcome.status in (DONE, SKIPPED):
            image = points[codec_name(job.config, configs)].setdefault(Path(job.input).stem, [])
            image.append(coolchic_point(outcome.results))
    return points


def write_sweep_results(jobs: list[Job], outcomes: dict[str, Outcome], lmbdas: list[float], out: Path) -> None:
    """The benchmark's files (CompressAI JSON per codec and image, ``points.tsv``) and
    ``sweep.json``, the job list with where each job's run folder is."""
    configs = configurations(jobs)
    descriptions = {codec_name(c, configs): f"coolchic_pl, config {c}, lambdas {','.join(f'{v:g}' for v in lmbdas)}, "
                                            "rate of the .cool file" for c in configs}
    write_results(coolchic_points(jobs, outcomes), descriptions, out)
    listing = [{"job": j.job_id, "input": j.input, "lmbda": j.lmbda, "config": j.config, "run_dir": j.run_dir,
                "status": outcomes[j.job_id].status if j.job_id in outcomes else "not run"} for j in jobs]
    (out / "sweep.json").write_text(json.dumps(listing, indent=2) + "\n")
