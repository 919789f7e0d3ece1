"""Video encodes through the command line: coding structures, bitstream, decoder CLI,
resume after a kill, bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from test_interrupts import KILL_AT, REPO, fit_command, run

from coolchic_pl.bench.video import inter_frame_coding

pytestmark = pytest.mark.slow
# A debug encode of three frames takes 2 to 3 minutes on 2 idle cores.
TIMEOUT = 1200
DEBUG = ["--config", str(REPO / "configs" / "debug.yaml"), "--checkpoint_interval_s", "0"]
THREE_FRAMES = ["--n_frames", "3", "--intra_pos", "0", "--p_pos", "-1"]
RUN_NAME = "BQSquare_224x128_60p_5frames_yuv420_8b_l0.001"
DECODED = "decoded_224x128_yuv420_8b.yuv"


@pytest.fixture(scope="module")
def bqsquare(data_dir: Path) -> Path:
    return data_dir / "video" / "BQSquare_224x128_60p_5frames_yuv420_8b.yuv"


@pytest.fixture(scope="module")
def three_frames(bqsquare: Path, tmp_path_factory) -> Path:
    """The issue's command: a debug encode of I, B and P frames."""
    output = tmp_path_factory.mktemp("video")
    code, err = run(fit_command(*DEBUG, "--input", str(bqsquare), *THREE_FRAMES, "--output_dir", str(output)),
                    timeout=TIMEOUT)
    assert code == 0, err
    return output / RUN_NAME


def test_three_frames_results(three_frames: Path) -> None:
    results = json.loads((three_frames / "results.json").read_text())
    frames = results["frames"]
    assert [(f["display"], f["type"], f["depth"]) for f in frames] == [(0, "I", 0), (1, "B", 2), (2, "P", 1)]
    assert [f["lmbda"] for f in frames] == pytest.approx([0.33e-3, 2.25e-3, 1.5e-3])  # the default policy
    for frame in frames:
        assert 20 < frame["psnr_y"] < 60 and frame["bpp"] > 0
        assert frame["psnr_yuv"] == pytest.approx((6 * frame["psnr_y"] + frame["psnr_u"] + frame["psnr_v"]) / 8)
    for frame in frames[1:]:  # display, references, translations, filter, motion model: a few bytes
        parts = [frame.get(f"bits_{role}") or 0 for role in ("residue", "motion")]
        assert frame["bits_frame"] + sum(parts) == frame["bits"] and 8 * 4 <= frame["bits_frame"] <= 8 * 40
        assert frame["mode"] == "+".join([frame["motion_model"], *(r for r in ("motion", "residue")
                                                                    if frame.get(f"bits_{r}"))])
        assert f"{frame['mode']} (final)" in frame["modes"] or f"{frame['mode']} (exact)" in frame["modes"]
        final = [loss for mode, loss in frame["modes"].items() if mode.endswith(("(final)", "(exact)"))]
        assert min(final) == pytest.approx(frame["loss"], abs=1e-8)  # the results keep 8 decimals
    assert (three_frames / "BQSquare_224x128_60p_5frames_yuv420_8b.cool").stat().st_size * 8 == pytest.approx(
        results["bpp"] * 224 * 128 * 3)
    assert (three_frames / DECODED).stat().st_size == 3 * 224 * 128 * 3 // 2


def test_bench_video_reads_the_network_share_and_modes_of_the_inter_frames(three_frames: Path) -> None:
    frames = sorted(json.loads((three_frames / "results.json").read_text())["frames"], key=lambda f: f["display"])
    coding = inter_frame_coding(frames)
    inter = [f for f in frames if f["type"] != "I"]
    network_bits = sum((f.get("bits_network_residue") or 0) + (f.get("bits_network_motion") or 0) for f in inter)
    assert coding["inter_network_share"] == pytest.approx(network_bits / sum(f["bits"] for f in inter))
    assert 0 <= coding["inter_network_share"] < 1
    assert coding["modes"] == f"B1 {frames[1]['mode']} P2 {frames[2]['mode']}"


def test_decoder_cli_reproduces_the_encoder_frames(three_frames: Path, tmp_path: Path) -> None:
    output = tmp_path / "out_224x128_yuv420_8b.yuv"
    done = subprocess.run([sys.executable, "-m", "coolchic_pl.decode",
                           str(three_frames / "BQSquare_224x128_60p_5frames_yuv420_8b.cool"), "-o", str(output)],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert output.read_bytes() == (three_frames / DECODED).read_bytes()
    wide = tmp_path / "out_224x128_yuv444_10b.yuv"
    done = subprocess.run([sys.executable, "-m", "coolchic_pl.decode",
                           str(three_frames / "BQSquare_224x128_60p_5frames_yuv420_8b.cool"), "-o", str(wide),
                           "--output_chroma_format", "444", "--output_bitdepth", "10"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    luma10 = np.frombuffer(wide.read_bytes(), "<u2").reshape(3, 3, 128, 224)[:, 0]
    luma8 = np.frombuffer(output.read_bytes(), np.uint8).reshape(3, -1)[:, :128 * 224].reshape(3, 128, 224)
    assert np.abs(luma10 / 1023 - luma8 / 255).max() < 0.5 / 1023 + 1e-9


def test_kill_mid_sequence_resumes_at_the_frame(bqsquare: Path, three_frames: Path, tmp_path: Path) -> None:
    """SIGKILL during the P frame (coded second); the rerun keeps the I frame, resumes the P
    frame from its checkpoint and writes the same file as the uninterrupted encode."""
    command = [*DEBUG, "--input", str(bqsquare), *THREE_FRAMES, "--output_dir", str(tmp_path),
               "--checkpoint_interval_s", "1e-6"]
    code, _ = run([sys.executable, str(KILL_AT), "step", "200", *command], timeout=TIMEOUT)
    assert code == -9
    assert (tmp_path / RUN_NAME / "frame_000" / "results.json").exists()
    assert not (tmp_path / RUN_NAME / "results.json").exists()
    code, err = run(fit_command(*command), timeout=TIMEOUT)
    assert code == 0, err
    assert "resuming frame 2 at" in err and "frame 0 (I" not in err
    name = "BQSquare_224x128_60p_5frames_yuv420_8b.cool"
    assert (tmp_path / RUN_NAME / name).read_bytes() == (three_frames / name).read_bytes()


def test_frames_reusing_networks_decode_bit_exactly_through_the_cli(bqsquare: Path, tmp_path: Path) -> None:
    """I0 P4 B2 B1 B3 with B frames reusing the networks of the B frame before them: B1
    shares B2's, B3 shares B1's (a chain); they send no networks and the decoder rebuilds
    every frame exactly."""
    rules = [{"frames": "B", "modes": ["motion+residue"]}, {"frames": "B", "depth": 3, "reuse_networks": "always"}]
    code, err = run(fit_command(*DEBUG, "--input", str(bqsquare), "--n_frames", "5", "--p_pos", "-1",
                                "--frame_rules", json.dumps(rules), "--output_dir", str(tmp_path)), timeout=TIMEOUT)
    assert code == 0, err
    run_dir = tmp_path / RUN_NAME
    frames = {f["display"]: f for f in json.loads((run_dir / "results.json").read_text())["frames"]}
    assert frames[2]["bits_network_residue"] > 0 and frames[2]["bits_network_motion"] > 0
    reused = {"arm": "same", "synthesis": "same", "upsampling": "same"}
    assert frames[1]["networks"] == {"residue": {"from": 2, **reused}, "motion": {"from": 2, **reused}}
    assert frames[3]["networks"] == {"residue": {"from": 1, **reused}, "motion": {"from": 1, **reused}}
    assert frames[1]["bits_network_residue"] == frames[3]["bits_network_motion"] == 0
    output = tmp_path / "out_224x128_yuv420_8b.yuv"
    done = subprocess.run([sys.executable, "-m", "coolchic_pl.decode", str(run_dir / "BQSquare_224x128_60p_5frames_yuv420_8b.cool"),
                           "-o", str(output)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert output.read_bytes() == (run_dir / DECODED).read_bytes()


def test_static_sequence_p_frame_is_cheap(bqsquare: Path, tmp_path: Path) -> None:
    """Two identical frames: the P frame predicts the first and codes almost nothing."""
    frame_bytes = 224 * 128 * 3 // 2
    static = tmp_path / "static_224x128_yuv420_8b.yuv"
    static.write_bytes(bqsquare.read_bytes()[:frame_bytes] * 2)
    code, err = run(fit_command(*DEBUG, "--input", str(static), "--n_frames", "2", "--p_pos", "1",
                                "--inter_arch", "lop", "--output_dir", str(tmp_path / "out")), timeout=TIMEOUT)
    assert code == 0, err
    frames = json.loads((tmp_path / "out" / "static_224x128_yuv420_8b_l0.001" / "results.json").read_text())["frames"]
    assert frames[1]["type"] == "P"
    assert frames[1]["bits"] < 0.35 * frames[0]["bits"], frames
    assert frames[1]["psnr_y"] > frames[0]["psnr_y"] - 1.0


@pytest.mark.parametrize("args, message", [
    (["--n_frames", "6", "--p_pos", "-1"], "6 frames from frame 0 asked but the file holds 5"),
    (["--n_frames", "3", "--p_pos", "1"], "the last frame (2) must be I or P"),
    (["--n_frames", "3", "--p_pos", "1-x"], "p_pos: '1-x' is not an index"),
    (["--n_frames", "3", "--p_pos", "-1", "--intra_pos", "1"], "frame 0 must be an I frame"),
])
def test_bad_video_requests(bqsquare: Path, tmp_path: Path, args: list[str], message: str) -> None:
    code, err = run(fit_command(*DEBUG, "--input", str(bqsquare), *args, "--output_dir", str(tmp_path)))
    assert code == 2
    assert err.strip().splitlines() == [f"error: {err.strip().removeprefix('error: ')}"] and message in err
    assert not list(tmp_path.rglob("*.cool")) and not list(tmp_path.rglob("*.yuv"))


def test_yuv_size_not_matching_its_name(bqsquare: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "clip_200x128_yuv420_8b.yuv"
    wrong.write_bytes(bqsquare.read_bytes())
    code, err = run(fit_command(*DEBUG, "--input", str(wrong), *THREE_FRAMES, "--output_dir", str(tmp_path / "out")))
    assert code == 2 and "is not a whole number of 200x128" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.cool"))
