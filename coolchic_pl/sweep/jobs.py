"""The job list of a sweep: every (input, lambda, config) to encode, each with a stable id.

A job is the command line of one ``coolchic-fit`` encode, written into its own folder.
Its id hashes what makes the encode what it is (the input's bytes and every resolved
option that shapes the result, as the run folder's fingerprint does), so the same sweep
run again finds its jobs in the same folders: finished ones are read back, interrupted
ones resume from their checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coolchic_pl.config import FitConfig, parse_config
from coolchic_pl.encode import RESULTS_FILE, fingerprint, run_folder
from coolchic_pl.io import SUPPORTED_EXTENSIONS, FrameFormatError

CONFIG_JOINER = "+"  # --config a.yaml+b.yaml: one configuration read from several files, in order


@dataclass(frozen=True)
class Job:
    """One encode of the sweep; picklable, so it travels to worker processes and clusters."""

    job_id: str
    input: str
    lmbda: float
    config: str  # the --config value it came from, as a label
    argv: tuple[str, ...]  # coolchic-fit arguments of the encode
    job_dir: str  # the encode's output_dir, private to this job
    run_dir: str  # the encode's run folder inside job_dir

    @property
    def name(self) -> str:
        return f"{Path(self.input).name} lambda {self.lmbda:g} {config_label(self.config)}"

    def finished_results(self) -> dict[str, Any] | None:
        """The results of an encode that ran to its end, or None."""
        path = Path(self.run_dir) / RESULTS_FILE
        return json.loads(path.read_text()) if path.exists() else None


def config_label(config: str) -> str:
    """Short name of a --config value: the file stems, joined."""
    return CONFIG_JOINER.join(Path(part).stem for part in config.split(CONFIG_JOINER))


def collect_inputs(sources: list[str]) -> list[Path]:
    """Files as given, and every supported file (.png, .ppm, .yuv) of a folder, sorted."""
    inputs: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            inputs += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS)
        elif path.is_file():
            inputs.append(path)
        else:
            raise FrameFormatError(path, "no such file or folder")
    if not inputs:
        raise FrameFormatError(", ".join(sources), f"no input found ({', '.join(SUPPORTED_EXTENSIONS)})")
    return inputs


def job_id(config: FitConfig) -> str:
    """The input's content and name (two copies of one image under two names stay two
    jobs), the lambda and the resolved options; not where the input or the output lie."""
    identity = {"name": Path(config.input).name, **fingerprint(config)}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    return digest.hexdigest()[:12]


def make_job(source: Path, lmbda: float, config: str, out: Path, overrides: tuple[str, ...] = ()) -> Job:
    """Parse the job's configuration (a bad config stops the sweep before anything runs).
    ``overrides`` are coolchic-fit arguments applied after the config files."""
    base = [arg for part in config.split(CONFIG_JOINER) for arg in ("--config", part)]
    argv = [*base, *overrides, "--input", str(source), "--lmbda", repr(lmbda)]
    parsed = parse_config(argv)
    identifier = job_id(parsed)
    job_dir = out / "jobs" / identifier
    argv += ["--output_dir", str(job_dir)]
    parsed.output_dir = str(job_dir)
    return Job(identifier, str(source), lmbda, config, tuple(argv), str(job_dir), str(run_folder(parsed)))


def make_jobs(sources: list[str], lmbdas: list[float], configs: list[str], out: Path,
              overrides: tuple[str, ...] = ()) -> list[Job]:
    """Inputs x configs x lambdas, in that order; a job listed twice is kept once."""
    jobs: dict[str, Job] = {}
    for source in collect_inputs(sources):
        for config in configs:
            for lmbda in lmbdas:
                job = make_job(source, lmbda, config, out, overrides)
                jobs.setdefault(job.job_id, job)
    return list(jobs.values())
