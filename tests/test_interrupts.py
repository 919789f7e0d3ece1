"""Interrupted encodes, the way users interrupt them: real fit processes, real signals
(SIGINT, SIGTERM, SIGUSR1, SIGKILL) in the middle of a Trainer.fit, the quantisation or
the bitstream writing, and resumes by running the same command again. Every resumed
encode must write a .cool file byte-identical to an uninterrupted one."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from coolchic_pl.fit import EXIT_INTERRUPTED, EXIT_REQUEUE, EXIT_TERMINATED

from child_signals import reset_signals

REPO = Path(__file__).resolve().parents[1]
KILL_AT = Path(__file__).resolve().parent / "kill_at.py"
RUN_NAME = "kodim15_192x128_l0.001"
# Debug preset: warm-up 3 + 2 candidates x 10 iterations (steps 0-49), phase0 50
# iterations (50-99), phase1 10 STE iterations then quantisation, phase2 latent re-tune.
DEBUG = ["--config", str(REPO / "configs" / "debug.yaml")]
# One long main phase with validations every 100 iterations, then quantisation.
LONG_PHASE = DEBUG + ["--preset", "measure_speed", "--n_itr", "500"]

pytestmark = pytest.mark.slow


def _start(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=reset_signals)


def fit_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "coolchic_pl.fit", *args]


def run(command: list[str], timeout: float = 240, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = _start(command, env)
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def cool_bytes(output_dir: Path) -> bytes:
    return (output_dir / RUN_NAME / "kodim15_192x128.cool").read_bytes()


@pytest.fixture(scope="module")
def reference(kodim15: Path, tmp_path_factory) -> dict[str, bytes]:
    """Uninterrupted encodes, with timed checkpoints off."""
    results = {}
    for name, args in (("debug", DEBUG), ("long", LONG_PHASE)):
        output = tmp_path_factory.mktemp(f"reference_{name}")
        code, err = run(fit_command(*args, "--input", str(kodim15), "--output_dir", str(output),
                                    "--checkpoint_interval_s", "0"))
        assert code == 0, err
        results[name] = cool_bytes(output)
    return results


# A checkpoint after every safe point (every iteration, validation and quantisation
# candidate), so that a kill always finds a recent one and what it finds is known.
EVERY_TIME = ["--checkpoint_interval_s", "1e-6"]


@pytest.mark.parametrize("point, n, resumed_at", [
    ("step", 27, "warmup0/c2, iteration 7"),
    ("step", 44, "warmup1/c1, iteration 4"),
    ("step", 80, "phase0, iteration 30"),
    ("quantization", 200, "phase1, network quantisation"),
    ("bitstream", 0, "the end of the last stage"),
    ("checkpoint", 60, "phase0, iteration"),
])
def test_sigkill_at_any_moment_then_rerun_gives_the_same_file(reference, kodim15: Path, tmp_path: Path, point: str,
                                                              n: int, resumed_at: str) -> None:
    args = [*DEBUG, "--input", str(kodim15), "--output_dir", str(tmp_path), *EVERY_TIME]
    code, err = run([sys.executable, str(KILL_AT), point, str(n), *args])
    assert code == -signal.SIGKILL, err
    run_dir = tmp_path / RUN_NAME
    assert (run_dir / "checkpoint.ckpt").exists() and not (run_dir / "results.json").exists()
    assert bool(list(run_dir.glob(".*.part"))) == (point == "checkpoint")
    code, err = run(fit_command(*args))
    assert code == 0, err
    assert f"resuming {run_dir} at {resumed_at}" in err
    assert cool_bytes(tmp_path) == reference["debug"]
    assert not (run_dir / "checkpoint.ckpt").exists() and not list(run_dir.glob(".*.part"))


def _signal_mid_phase(command: list[str], signum: int, after_line: str) -> tuple[int, str]:
    """Start ``command``, send ``signum`` once its stderr shows ``after_line``."""
    process = _start(command)
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        for line in process.stderr:
            lines.append(line)
            if after_line in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert seen.wait(timeout=120), "".join(lines)
    process.send_signal(signum)
    process.wait(timeout=120)
    reader.join(timeout=10)
    return process.returncode, "".join(lines)


@pytest.mark.parametrize("signum, exit_code, message", [
    (signal.SIGINT, EXIT_INTERRUPTED, "interrupted: the encode is checkpointed in"),
    (signal.SIGTERM, EXIT_TERMINATED, "terminated (SIGTERM): the encode is checkpointed in"),
    (signal.SIGUSR1, EXIT_REQUEUE, "time is up (exit code 42, requeue)"),
])
def test_signal_inside_a_phase_checkpoints_and_the_rerun_finishes(reference, kodim15: Path, tmp_path: Path,
                                                                  signum: int, exit_code: int, message: str) -> None:
    command = fit_command(*LONG_PHASE, "--input", str(kodim15), "--output_dir", str(tmp_path))
    code, err = _signal_mid_phase(command, signum, "phase0    100/500")
    assert code == exit_code, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(message) and last.endswith("run the same command again to resume")
    run_dir = tmp_path / RUN_NAME
    assert (run_dir / "checkpoint.ckpt").exists() and not (run_dir / "results.json").exists()
    code, err = run(command)
    assert code == 0, err
    resumed_at = re.search(rf"resuming {re.escape(str(run_dir))} at phase0, iteration (\d+)", err)
    assert resumed_at and 100 <= int(resumed_at.group(1)) < 500, err  # where the signal found it
    assert cool_bytes(tmp_path) == reference["long"]


def test_a_sigterm_seen_only_by_lightning_checkpoints_the_finished_iteration(reference, kodim15: Path,
                                                                             tmp_path: Path) -> None:
    """A SIGTERM landing after the encode's checks of an iteration ends the fit at the end of
    it through Lightning's SIGTERMException: the iteration is checkpointed all the same, and
    the rerun resumes there and writes the same file."""
    callback = json.dumps([{"class_path": "lightning_sigterm.LightningSigtermAt",
                            "init_args": {"step": 200, "marker": str(tmp_path / "sent")}}])
    command = fit_command(*LONG_PHASE, "--input", str(kodim15), "--output_dir", str(tmp_path),
                          "--checkpoint_interval_s", "0", "--callbacks", callback)
    tests_importable = {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    code, err = run(command, env=tests_importable)
    assert code == EXIT_TERMINATED, err
    assert err.strip().splitlines()[-1].startswith("terminated (SIGTERM): the encode is checkpointed in")
    code, err = run(command, env=tests_importable)
    assert code == 0, err
    assert f"resuming {tmp_path / RUN_NAME} at phase0, iteration 200" in err
    assert cool_bytes(tmp_path) == reference["long"]


def test_job_duration_requeues_until_done_with_the_same_result(reference, kodim15: Path, tmp_path: Path) -> None:
    command = fit_command(*LONG_PHASE, "--input", str(kodim15), "--output_dir", str(tmp_path),
                         "--job_duration_min", "0.05")
    codes = []
    for _ in range(60):  # each run gets 3 s of encoding: a loaded machine needs more of them
        code, err = run(command)
        codes.append(code)
        if code != EXIT_REQUEUE:
            break
        assert "time is up (exit code 42, requeue)" in err.strip().splitlines()[-1]
    assert codes[0] == EXIT_REQUEUE and codes[-1] == 0, codes
    assert cool_bytes(tmp_path) == reference["long"]
