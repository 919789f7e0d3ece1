"""What a sweep tells its user: a line per finished job with the overall progress and
ETA (and a live bar on a terminal), then a summary table of every job."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from coolchic_pl.bench.formats import coolchic_point
from coolchic_pl.sweep.jobs import Job, config_label
from coolchic_pl.sweep.worker import DONE, SKIPPED, Outcome
from coolchic_pl.training.checkpoint import StopReason

# A job the sweep never ran (it was stopped first), and the exit codes of a stopped sweep.
NOT_RUN = Outcome("not run", "the sweep stopped before this job")
STOP_EXIT_CODES = {StopReason.INTERRUPT: 130, StopReason.TERMINATE: 143}

SUMMARY_COLUMNS = ("job", "input", "lmbda", "config", "status", "psnr_db", "bpp", "time_s", "detail")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def _quality(outcome: Outcome) -> tuple[str, str, str]:
    """PSNR, bpp and encoding time of a finished job, as text."""
    if outcome.results is None:
        return "", "", ""
    point = coolchic_point(outcome.results)
    psnr = point.get("psnr_rgb", point.get("psnr_yuv"))
    return f"{psnr:.3f}", f"{point['bpp']:.4f}", f"{point['encoding_time_s']:.1f}"


def outcome_line(job: Job, outcome: Outcome) -> str:
    if outcome.results is not None:
        psnr, bpp, seconds = _quality(outcome)
        return f"{job.name}: {psnr} dB at {bpp} bpp ({seconds} s of encoding)"
    return f"{job.name}: {outcome.message}"


class Progress:
    """Counts finished jobs; the ETA assumes the remaining jobs take as long, per job
    and in wall time, as those finished in this run."""

    def __init__(self, total: int, stream: TextIO | None = None):
        self.stream = sys.stderr if stream is None else stream
        self.total = total
        self.finished = 0
        self.ran = 0
        self.started = time.monotonic()
        self.bar = tqdm(total=total, unit="job", file=self.stream, dynamic_ncols=True,
                        disable=not getattr(self.stream, "isatty", lambda: False)())

    def report(self, job: Job, outcome: Outcome) -> None:
        self.finished += 1
        if outcome.status != SKIPPED:
            self.ran += 1
        remaining = self.total - self.finished
        eta = ""
        if remaining and self.ran:
            eta = f" | ETA {_duration((time.monotonic() - self.started) / self.ran * remaining)}"
        width = len(str(self.total))
        line = f"[{self.finished:{width}d}/{self.total}] {outcome.status:7s} {outcome_line(job, outcome)}{eta}"
        self.bar.write(line, file=self.stream)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def summary_rows(jobs: list[Job], outcomes: dict[str, Outcome]) -> list[tuple[str, ...]]:
    rows = []
    for job in jobs:
        outcome = outcomes.get(job.job_id, NOT_RUN)
        psnr, bpp, seconds = _quality(outcome)
        detail = str(Path(job.run_dir)) if outcome.status in (DONE, SKIPPED) else outcome.message
        rows.append((job.job_id, Path(job.input).name, f"{job.lmbda:g}", config_label(job.config), outcome.status,
                     psnr, bpp, seconds, detail))
    return rows


def summary_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [SUMMARY_COLUMNS, *rows]) for i in range(len(SUMMARY_COLUMNS) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in [SUMMARY_COLUMNS, *rows]]
    return "\n".join(lines)


def write_summary(rows: list[tuple[str, ...]], path: Path) -> None:
    path.write_text("\n".join("\t".join(r) for r in [SUMMARY_COLUMNS, *rows]) + "\n")
