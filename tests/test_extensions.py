"""Your own callbacks and loggers from the config (class_path / init_args)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from child_signals import reset_signals
from coolchic_pl.fit import main

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
KILL_AT = TESTS / "kill_at.py"
DEBUG = ["--config", str(REPO / "configs" / "debug.yaml")]


def _run(command: list[str]) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
                            preexec_fn=reset_signals)
    return result.returncode, result.stderr


def _counting(tmp_path: Path, name: str) -> list[str]:
    spec = json.dumps([{"class_path": "counting_callback.CountSteps", "init_args": {"path": str(tmp_path / name)}}])
    return [*DEBUG, "--callbacks", spec]


@pytest.fixture(scope="module")
def uninterrupted(kodim15: Path, tmp_path_factory) -> tuple[int, bytes, Path]:
    """(steps counted, .cool bytes, output folder) of an encode that is not interrupted, with
    logging turned off (the interrupted ones log: the file must not depend on it)."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    code, err = _run([sys.executable, "-m", "coolchic_pl.fit", *_counting(folder, "count"), "--input", str(kodim15),
                      "--output_dir", str(folder), "--checkpoint_interval_s", "0", "--loggers", "[]"])
    assert code == 0, err
    results = json.loads(next(folder.glob("*/results.json")).read_text())
    assert int((folder / "count").read_text()) == results["n_iterations"]
    return results["n_iterations"], next(folder.glob("*/*.cool")).read_bytes(), folder


@pytest.mark.slow
@pytest.mark.parametrize("interval, resumed_at", [("0", "the start of phase0"), ("1e-6", "phase0, iteration 30")])
def test_a_user_callback_keeps_its_state_through_a_kill_and_a_rerun(uninterrupted, kodim15: Path, tmp_path: Path,
                                                                     interval: str, resumed_at: str) -> None:
    """Killed (SIGKILL) at step 80: the rerun restores the count from the checkpoint (between
    stages, or inside the phase through Lightning's checkpoint), redoes the steps after it,
    and ends with the uninterrupted count and the byte-identical file."""
    args = [*_counting(tmp_path, "count"), "--input", str(kodim15), "--output_dir", str(tmp_path),
            "--checkpoint_interval_s", interval]
    code, err = _run([sys.executable, str(KILL_AT), "step", "80", *args])
    assert code == -signal.SIGKILL, err
    assert int((tmp_path / "count").read_text()) == 80
    code, err = _run([sys.executable, "-m", "coolchic_pl.fit", *args])
    assert code == 0, err
    assert f"at {resumed_at}" in err, err
    steps, cool, _ = uninterrupted
    assert int((tmp_path / "count").read_text()) == steps
    assert next(tmp_path.glob("*/*.cool")).read_bytes() == cool


@pytest.mark.slow
def test_a_user_callback_sees_every_stage_of_a_video_and_keeps_its_state_through_a_kill(data_dir: Path,
                                                                                        tmp_path: Path) -> None:
    """Three frames I0 P2 B1: the count covers every frame's stages, motion pre-training
    included; killed a few steps into the second coded frame (its count then restored from
    the finished first frame), the rerun ends with the same count and the same file."""
    video = ["--input", str(data_dir / "video" / "BQSquare_224x128_60p_5frames_yuv420_8b.yuv"), "--n_frames", "3",
             "--intra_pos", "0", "--p_pos", "-1", "--checkpoint_interval_s", "0"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    code, err = _run([sys.executable, "-m", "coolchic_pl.fit", *_counting(tmp_path, "whole_count"), *video,
                      "--output_dir", str(whole)])
    assert code == 0, err
    frames = json.loads(next(whole.glob("*/results.json")).read_text())["frames"]
    assert int((tmp_path / "whole_count").read_text()) == sum(frame["n_iterations"] for frame in frames)
    first = next(frame["n_iterations"] for frame in frames if frame["coding"] == 0)
    args = [*_counting(tmp_path, "count"), *video, "--output_dir", str(killed)]
    code, err = _run([sys.executable, str(KILL_AT), "step", str(first + 5), *args])
    assert code == -signal.SIGKILL, err
    code, err = _run([sys.executable, "-m", "coolchic_pl.fit", *args])
    assert code == 0, err
    assert (tmp_path / "count").read_text() == (tmp_path / "whole_count").read_text()
    assert next(killed.glob("*/*.cool")).read_bytes() == next(whole.glob("*/*.cool")).read_bytes()


def test_stock_loggers_can_be_replaced_or_turned_off(uninterrupted, kodim15: Path, tmp_path: Path) -> None:
    csv = json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger",
                       "init_args": {"save_dir": str(tmp_path / "mine"), "name": "log"}}])
    assert main([*DEBUG, "--input", str(kodim15), "--output_dir", str(tmp_path / "a"), "--loggers", csv]) == 0
    run_dir = next((tmp_path / "a").glob("*_l0.001"))
    assert not (run_dir / "tensorboard").exists() and not (run_dir / "csv").exists()
    assert "psnr" in next((tmp_path / "mine").rglob("metrics.csv")).read_text().lower()
    logged_nothing = uninterrupted[2]  # encoded with --loggers []
    assert next(logged_nothing.glob("*/results.json"))
    assert not list(logged_nothing.rglob("events.out.*")) and not list(logged_nothing.rglob("metrics.csv"))


@pytest.mark.parametrize("option, spec, message", [
    ("--callbacks", '[{class_path: nope.Missing}]', "callbacks[0]: cannot import nope.Missing"),
    ("--callbacks", '[{class_path: lightning.pytorch.loggers.CSVLogger}]', "is not a lightning.pytorch"),
    ("--callbacks", '[{class_path: lightning.pytorch.callbacks.Timer, init_args: {speed: 2}}]', "unexpected keyword"),
    ("--loggers", '[{class_path: lightning.pytorch.callbacks.Timer}]', "loggers[0]"),
    ("--callbacks", '[{path: x}]', "callbacks[0]: expected {class_path"),
])
def test_a_bad_class_path_is_one_line_before_any_output(kodim15: Path, tmp_path: Path, capsys, option: str,
                                                        spec: str, message: str) -> None:
    assert main([*DEBUG, "--input", str(kodim15), "--output_dir", str(tmp_path), option, spec]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err and captured.err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_a_bad_class_path_in_a_video_is_one_line_before_any_output(data_dir: Path, tmp_path: Path, capsys) -> None:
    video = ["--input", str(data_dir / "video" / "BQSquare_224x128_60p_5frames_yuv420_8b.yuv"), "--n_frames", "3",
             "--p_pos", "-1"]
    assert main([*DEBUG, *video, "--output_dir", str(tmp_path), "--callbacks", "[{class_path: nope.Missing}]"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: callbacks[0]: cannot import nope.Missing") and captured.err.count("\n") == 1
    assert not list(tmp_path.iterdir())
