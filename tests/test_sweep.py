"""Sweeps the way users run them: ``python -m coolchic_pl.sweep`` in a real process, with
real worker processes, a SIGKILL to one of them, a re-run of the same command, and the
same jobs through submitit's local executor (including its pre-emption signal)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from coolchic_pl.bench.rd import centre_crop
from coolchic_pl.sweep.__main__ import build_parser, make_launcher
from coolchic_pl.sweep.__main__ import main as sweep_main
from coolchic_pl.sweep.jobs import make_jobs
from coolchic_pl.sweep.slurm import SlurmLauncher

from child_signals import reset_signals

REPO = Path(__file__).resolve().parents[1]
DEBUG = str(REPO / "configs" / "debug.yaml")
LMBDAS = "0.02,0.004,0.001,0.0004"
ONE_THREAD = ["--workers", "2", "--threads_per_worker", "1"]


def start_module(module: str, *args: str) -> subprocess.Popen:
    """``python -m module args`` as a user starts it, its signals reset, its output captured."""
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=reset_signals)


def start_sweep(*args: str) -> subprocess.Popen:
    return start_module("coolchic_pl.sweep", *args)


def sweep(*args: str, timeout: float = 300) -> tuple[int, str, str]:
    process = start_sweep(*args)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def cool_files(out: Path) -> dict[str, bytes]:
    """The .cool files of a sweep folder by job id."""
    return {path.relative_to(out / "jobs").parts[0]: path.read_bytes() for path in (out / "jobs").glob("*/*/*.cool")}


def worker_pid(job_dir: Path, timeout: float = 60) -> int:
    """The process running a job, from the first line of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = job_dir / "encode.log"
        found = re.search(r"in process (\d+)", log.read_text()) if log.exists() else None
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    raise AssertionError(f"no worker started for {job_dir}")


def wait_for_checkpoint(run_dir: Path, timeout: float = 60) -> None:
    """The first is written at the end of the first warm-up candidate, seconds before the encode ends."""
    deadline = time.monotonic() + timeout
    while not (run_dir / "checkpoint.ckpt").exists():
        assert time.monotonic() < deadline, f"no checkpoint in {run_dir}"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def crop(kodim15: Path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "kodim15_96x64.png"
    centre_crop(Image.open(kodim15).convert("RGB"), 96, 64).save(path)
    return path


@pytest.fixture(scope="module")
def local_sweep(crop: Path, tmp_path_factory) -> Path:
    """4 debug jobs on 2 local workers of one thread each."""
    out = tmp_path_factory.mktemp("sweep")
    code, table, err = sweep("--images", str(crop), "--lmbdas", LMBDAS, "--config", DEBUG, "--out", str(out),
                             *ONE_THREAD)
    assert code == 0, err
    assert "2 worker(s) x 1 thread(s)" in err and len(re.findall(r"\] done ", err)) == 4
    return out


@pytest.mark.slow
def test_local_sweep_writes_every_result_and_a_rerun_skips_them(local_sweep: Path, crop: Path) -> None:
    assert len(cool_files(local_sweep)) == 4
    rows = (local_sweep / "points.tsv").read_text().splitlines()
    assert [r.split("\t")[2] for r in rows[1:]] == LMBDAS.split(",")
    document = json.loads((local_sweep / "results" / "coolchic_pl" / "kodim15_96x64.json").read_text())
    assert len(document["results"]["bpp"]) == 4
    assert document["results"]["bpp"] == sorted(document["results"]["bpp"])
    assert document["results"]["psnr-rgb"] == sorted(document["results"]["psnr-rgb"])  # more bits, more quality
    summary = (local_sweep / "summary.tsv").read_text().splitlines()
    assert len(summary) == 5 and all("\tdone\t" in row for row in summary[1:])

    before = {path: path.stat().st_mtime_ns for path in (local_sweep / "jobs").rglob("*.cool")}
    started = time.monotonic()
    code, table, err = sweep("--images", str(crop), "--lmbdas", LMBDAS, "--config", DEBUG, "--out",
                             str(local_sweep), *ONE_THREAD)
    assert code == 0, err
    assert time.monotonic() - started < 30 and "to run on" not in err  # no worker started
    assert len(re.findall(r"\] skipped ", err)) == 4 and table.count(" skipped ") == 4
    assert before == {path: path.stat().st_mtime_ns for path in (local_sweep / "jobs").rglob("*.cool")}


@pytest.mark.slow
def test_killed_worker_resumes_on_rerun_while_a_bad_input_fails_alone(local_sweep: Path, crop: Path,
                                                                     tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but not an image")
    out = tmp_path / "sweep"
    args = ["--images", str(crop), str(bad), "--lmbdas", "0.02,0.004", "--config", DEBUG, "--out", str(out),
            *ONE_THREAD]
    jobs = {(Path(j.input).name, j.lmbda): j for j in make_jobs([str(crop), str(bad)], [0.02, 0.004], [DEBUG], out)}
    victim = jobs["kodim15_96x64.png", 0.02]

    process = start_sweep(*args)
    pid = worker_pid(Path(victim.job_dir))
    wait_for_checkpoint(Path(victim.run_dir))
    os.kill(pid, signal.SIGKILL)
    table, err = process.communicate(timeout=300)
    assert process.returncode == 1, err
    rows = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert "killed by SIGKILL" in rows[victim.job_id] and " failed " in rows[victim.job_id]
    assert " done " in rows[jobs["kodim15_96x64.png", 0.004].job_id]  # the other jobs went on
    for lmbda in (0.02, 0.004):
        bad_row = rows[jobs["broken.png", lmbda].job_id]
        assert " failed " in bad_row and "broken.png" in bad_row and "Traceback" not in bad_row
    assert (Path(victim.run_dir) / "checkpoint.ckpt").exists()

    code, table, err = sweep(*args)
    assert code == 1  # the broken input still fails, with the same one line
    assert "resuming" in (Path(victim.job_dir) / "encode.log").read_text()
    assert "] done    kodim15_96x64.png lambda 0.02" in err and "] skipped kodim15_96x64.png lambda 0.004" in err
    # Resumed from its checkpoint, the job writes the bytes of the uninterrupted encode.
    assert cool_files(out)[victim.job_id] == cool_files(local_sweep)[victim.job_id]


@pytest.mark.slow
def test_interrupted_sweep_checkpoints_its_running_jobs_and_resumes(local_sweep: Path, crop: Path,
                                                                    tmp_path: Path) -> None:
    """SIGINT to the sweep alone (as ``kill -INT``): it stops launching, its running
    worker checkpoints and stops, and the same command finishes the job from there."""
    out = tmp_path / "sweep"
    args = ["--images", str(crop), "--lmbdas", "0.001,0.0004", "--config", DEBUG, "--out", str(out),
            "--workers", "1", "--threads_per_worker", "1"]
    first, second = make_jobs([str(crop)], [0.001, 0.0004], [DEBUG], out)
    process = start_sweep(*args)
    worker_pid(Path(first.job_dir))
    wait_for_checkpoint(Path(first.run_dir))
    process.send_signal(signal.SIGINT)
    table, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "interrupted: running jobs were checkpointed; run the same command again to resume" in err
    rows = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert " stopped " in rows[first.job_id] and " not run " in rows[second.job_id]
    assert not (Path(first.run_dir) / "results.json").exists()

    code, table, err = sweep(*args)
    assert code == 0, err
    assert "resuming" in (Path(first.job_dir) / "encode.log").read_text()
    assert cool_files(out) == {job: data for job, data in cool_files(local_sweep).items()
                               if job in (first.job_id, second.job_id)}


@pytest.mark.slow
def test_submitit_local_executor_runs_the_same_job(local_sweep: Path, crop: Path, tmp_path: Path) -> None:
    """The SLURM launcher's submission, on submitit's local executor; a pre-emption
    signal (USR2) in the middle of the encode checkpoints, requeues and resumes it."""
    out = tmp_path / "sweep"
    process = start_sweep("--images", str(crop), "--lmbdas", "0.02", "--config", DEBUG, "--out", str(out),
                          "--launcher", "slurm", "--slurm.cluster", "local",
                          "--slurm.gpus_per_node", "0", "--slurm.cpus_per_task", "1", "--slurm.poll_s", "0.2")
    job = make_jobs([str(crop)], [0.02], [DEBUG], out)[0]
    pid = worker_pid(Path(job.job_dir))
    wait_for_checkpoint(Path(job.run_dir))
    os.kill(pid, signal.SIGUSR2)
    table, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    log = (Path(job.job_dir) / "encode.log").read_text()
    assert "stopped (requeue)" in log and "resuming" in log
    assert len(re.findall(r"in process \d+", log)) == 2  # a second task, started by submitit's requeue
    assert cool_files(out)[job.job_id] == cool_files(local_sweep)[job.job_id]
    assert json.loads((out / "results" / "coolchic_pl" / "kodim15_96x64.json").read_text())["results"] == \
        {k: v[:1] for k, v in json.loads((local_sweep / "results" / "coolchic_pl" /
                                          "kodim15_96x64.json").read_text())["results"].items()}


def test_job_ids_follow_content_lambda_and_config(crop: Path, tmp_path: Path) -> None:
    jobs = make_jobs([str(crop)], [0.02, 0.004], [DEBUG, DEBUG + "+" + str(REPO / "configs" / "lop.yaml")], tmp_path)
    assert len({j.job_id for j in jobs}) == 4
    copy = tmp_path / "elsewhere" / crop.name
    copy.parent.mkdir()
    copy.write_bytes(crop.read_bytes())
    moved = make_jobs([str(copy)], [0.02, 0.004], [DEBUG], tmp_path / "other")
    assert [j.job_id for j in moved] == [j.job_id for j in jobs[:2]]  # where files lie does not matter
    assert make_jobs([str(copy)], [0.02], [DEBUG], tmp_path, ("--seed", "1"))[0].job_id != moved[0].job_id


@pytest.mark.parametrize("args, message", [
    (["--images", "nowhere.png"], "no such file or folder"),
    (["--lmbdas", "0.02,x"], "--lmbdas must be comma-separated numbers"),
    (["--lmbdas", "-1"], "--lmbdas must all be > 0"),
    (["--set", "n_itr"], "--set takes KEY=VALUE"),
    (["--set", "no_such_option=3"], "no_such_option"),
    (["--workers", "0", "--threads_per_worker", "1"], "workers and threads per worker must be >= 1"),
    (["--launcher", "slurm", "--slurm.timeout_min", "0"], "slurm.timeout_min must be >= 1"),
])
def test_bad_arguments_are_one_line_errors(args: list[str], message: str, crop: Path, tmp_path: Path,
                                           capsys) -> None:
    defaults = {"--images": str(crop), "--config": DEBUG, "--out": str(tmp_path / "sweep")}
    argv = [part for key, value in defaults.items() if key not in args for part in (key, value)] + args
    assert sweep_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "sweep").exists()


def test_shipped_slurm_settings_parse_and_single_keys_override_them(tmp_path: Path) -> None:
    args = build_parser().parse_args(["--images", "x.png", "--config", DEBUG, "--launcher", "slurm",
                                      "--slurm", str(REPO / "configs" / "sweep" / "slurm.yaml"),
                                      "--slurm.timeout_min", "30"])
    launcher = make_launcher(args, tmp_path)
    assert isinstance(launcher, SlurmLauncher)
    s = launcher.settings
    assert (s.cluster, s.partition, s.timeout_min, s.gpus_per_node) == ("slurm", "gpu", 30, 1)
    assert s.setup == ["source .venv/bin/activate"]


@pytest.mark.slow
def test_stopped_bench_rd_names_what_did_not_finish_without_a_traceback(crop: Path, tmp_path: Path) -> None:
    """SIGTERM to ``bench rd`` while its first encode runs: that one checkpoints, the other
    is reported as not run, in one error, with the exit code of a terminated sweep."""
    out = tmp_path / "rd"
    process = start_module("coolchic_pl.bench", "rd", "--images", str(crop), "--lmbdas", "0.001,0.0004",
                           "--config", DEBUG, "--out", str(out), "--codecs", "JPEG", "--workers", "1",
                           "--threads-per-worker", "1")
    deadline = time.monotonic() + 120
    while not list(out.glob("coolchic/jobs/*/*/checkpoint.ckpt")):
        assert time.monotonic() < deadline and process.poll() is None, "no encode checkpointed"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "Traceback" not in err
    assert "error: coolchic_pl encodes did not finish" in err
    assert "the sweep stopped before this job" in err
