"""The installed console commands, used the way a user uses them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coolchic_pl.training.checkpoint import EncodeStopped, StopReason
from coolchic_pl.training.signals import StopSignals

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = Path(sys.executable).parent  # pip installs console scripts beside the interpreter


def _command(name: str) -> str:
    script = SCRIPTS / name
    assert script.exists(), f"{script} missing: install the package (pip install -e .)"
    return str(script)


@pytest.mark.slow
def test_coolchic_fit_encodes_a_jpeg_and_coolchic_decode_reads_it_back(kodim15: Path, tmp_path: Path) -> None:
    jpeg = tmp_path / "photo.jpg"
    Image.open(kodim15).save(jpeg, quality=92)
    encoded = subprocess.run([_command("coolchic-fit"), "--config", str(REPO / "configs" / "debug.yaml"),
                              "--input", str(jpeg), "--output_dir", str(tmp_path / "runs")],
                             capture_output=True, text=True, timeout=300)
    assert encoded.returncode == 0, encoded.stderr
    run_dir = tmp_path / "runs" / "photo_l0.001"
    decoded = subprocess.run([_command("coolchic-decode"), str(run_dir / "photo.cool"),
                              "-o", str(tmp_path / "out.png")], capture_output=True, text=True, timeout=120)
    assert decoded.returncode == 0, decoded.stderr
    out = np.asarray(Image.open(tmp_path / "out.png"))
    np.testing.assert_array_equal(out, np.asarray(Image.open(run_dir / "decoded.png")))
    # The PSNR reported is against the JPEG's own pixels, which are what was compressed.
    source = np.asarray(Image.open(jpeg).convert("RGB"), dtype=np.float64)
    psnr = 10 * np.log10(255**2 / np.mean((out.astype(np.float64) - source) ** 2))
    assert psnr == pytest.approx(json.loads((run_dir / "results.json").read_text())["psnr_db"], abs=0.01)


def test_coolchic_bench_and_decode_answer_help_and_bad_input(tmp_path: Path) -> None:
    for name in ("coolchic-bench", "coolchic-decode", "coolchic-fit"):
        result = subprocess.run([_command(name), "--help"], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and f"usage: {name}" in result.stdout
    missing = subprocess.run([_command("coolchic-decode"), str(tmp_path / "none.cool")], capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and missing.stderr.count("\n") == 1


def test_first_ctrl_c_asks_for_a_stop_and_a_second_aborts() -> None:
    with StopSignals() as signals:
        assert signals.reason() is None
        signal.raise_signal(signal.SIGINT)
        assert signals.reason() is StopReason.INTERRUPT
        with pytest.raises(EncodeStopped) as aborted:
            signal.raise_signal(signal.SIGINT)
        assert aborted.value.reason is StopReason.ABORT
        signal.raise_signal(signal.SIGTERM)  # a later signal of another kind changes nothing
        assert signals.reason() is StopReason.INTERRUPT
    assert signal.getsignal(signal.SIGINT) != signals._handle
