"""``python -m coolchic_pl.sweep --images DIR_OR_FILES --lmbdas 0.02,0.004,0.001
--config configs/fast.yaml [--config ...] --out runs/sweep [--launcher local|slurm]``

Encodes every input at every lambda with every configuration (each ``--config`` is one
configuration; ``a.yaml+b.yaml`` reads two files into one; ``--set key=value`` changes an
option of every job), on a local worker pool or
as a SLURM job array. Running the same command again skips finished jobs and resumes
interrupted ones. Writes ``summary.tsv``, ``sweep.json``, ``points.tsv`` and one
CompressAI JSON per configuration and input under ``results/``.

Exit codes: 0 every job finished, 1 some job failed or did not run, 2 bad arguments or
inputs, 130/143 stopped by SIGINT/SIGTERM (running jobs checkpointed).
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path
from typing import Literal, Optional

import jsonargparse

from coolchic_pl.io import FrameFormatError
from coolchic_pl.sweep.jobs import make_jobs
from coolchic_pl.sweep.local import LocalLauncher
from coolchic_pl.sweep.report import STOP_EXIT_CODES, summary_rows, summary_table, write_summary
from coolchic_pl.sweep.run import Launcher, run_sweep, write_sweep_results
from coolchic_pl.sweep.slurm import SlurmLauncher, SlurmSettings
from coolchic_pl.sweep.worker import DONE, SKIPPED
from coolchic_pl.training.checkpoint import StopReason

EXIT_FAILED_JOBS = 1
EXIT_BAD_INPUT = 2


def build_parser() -> jsonargparse.ArgumentParser:
    parser = jsonargparse.ArgumentParser(prog="python -m coolchic_pl.sweep", exit_on_error=False,
                                         description="Encode inputs x lambdas x configs, resumably.")
    parser.add_argument("--images", nargs="+", required=True,
                        help="input files (.png, .ppm, .yuv) or folders of them")
    parser.add_argument("--lmbdas", default="0.02,0.004,0.001,0.0004", help="comma-separated lambdas")
    parser.add_argument("--config", action="append", required=True,
                        help="coolchic-fit config; repeat for several configurations, a.yaml+b.yaml merges files")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="coolchic-fit option for every job, after the configs (repeat: --set n_itr=800)")
    parser.add_argument("--out", default="runs/sweep", help="sweep folder (reused: finished jobs are skipped)")
    parser.add_argument("--launcher", type=Literal["local", "slurm"], default="local")
    parser.add_argument("--workers", type=Optional[int], default=None,
                        help="local: worker processes (default: one per GPU, else one per CPU core)")
    parser.add_argument("--threads_per_worker", type=Optional[int], default=None,
                        help="local: torch threads of each worker (default: the CPU cores shared out)")
    parser.add_argument("--slurm", type=SlurmSettings, default=SlurmSettings(),
                        help="slurm: settings file (YAML), or single keys as --slurm.partition gpu")
    return parser


def parse_lmbdas(text: str) -> list[float]:
    try:
        lmbdas = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--lmbdas must be comma-separated numbers, got {text!r}") from None
    if not all(v > 0 for v in lmbdas):
        raise ValueError(f"--lmbdas must all be > 0, got {text!r}")
    return lmbdas


def parse_overrides(settings: list[str]) -> tuple[str, ...]:
    arguments: list[str] = []
    for setting in settings:
        key, separator, value = setting.partition("=")
        if not separator or not key:
            raise ValueError(f"--set takes KEY=VALUE, got {setting!r}")
        arguments += [f"--{key}", value]
    return tuple(arguments)


def make_launcher(args: jsonargparse.Namespace, out: Path) -> Launcher:
    if args.launcher == "local":
        return LocalLauncher(args.workers, args.threads_per_worker)
    names = {field.name for field in fields(SlurmSettings)}
    settings = {k: v for k, v in vars(args.slurm).items() if k in names}
    return SlurmLauncher(SlurmSettings(**settings), out / "submitit")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        lmbdas = parse_lmbdas(args.lmbdas)
        out = Path(args.out)
        launcher = make_launcher(args, out)
        jobs = make_jobs(args.images, lmbdas, args.config, out, parse_overrides(args.set))
    except jsonargparse.ArgumentError as error:
        print("error: " + " ".join(line.strip() for line in str(error).splitlines() if line.strip()), file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ValueError, FrameFormatError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out.mkdir(parents=True, exist_ok=True)
    n_inputs = len({job.input for job in jobs})
    print(f"sweep: {len(jobs)} job(s) = {n_inputs} input(s) x {len(lmbdas)} lambda(s) x {len(args.config)} "
          f"config(s), in {out}", file=sys.stderr, flush=True)
    outcomes = run_sweep(jobs, launcher)
    write_sweep_results(jobs, outcomes, lmbdas, out)
    rows = summary_rows(jobs, outcomes)
    write_summary(rows, out / "summary.tsv")
    print(summary_table(rows))
    if launcher.stop_reason is not None:
        where = ("the submitted tasks keep running on the cluster; once they have ended, run the same command "
                 "again to collect them" if isinstance(launcher, SlurmLauncher) else
                 "running jobs were checkpointed; run the same command again to resume")
        print(f"{launcher.stop_reason.value}: {where}", file=sys.stderr)
        return STOP_EXIT_CODES.get(launcher.stop_reason, STOP_EXIT_CODES[StopReason.INTERRUPT])
    finished = {job_id for job_id, outcome in outcomes.items() if outcome.status in (DONE, SKIPPED)}
    unfinished = [job for job in jobs if job.job_id not in finished]
    if unfinished:
        print(f"{len(unfinished)} of {len(jobs)} job(s) did not finish (see the summary); run the same command "
              "again to retry them", file=sys.stderr)
        return EXIT_FAILED_JOBS
    return 0


if __name__ == "__main__":
    sys.exit(main())
