"""End-to-end encodes through ``coolchic_pl.fit.main`` on the real 192x128 image."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from coolchic_pl import fit

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _debug_args(kodim15: Path, output_dir: Path, *extra: str) -> list[str]:
    return ["--config", str(CONFIGS / "debug.yaml"), "--input", str(kodim15), "--output_dir", str(output_dir), *extra]


@pytest.fixture(scope="module")
def debug_run(kodim15, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("fit")
    assert fit.main(_debug_args(kodim15, output)) == 0
    return output / "kodim15_192x128_l0.001"


@pytest.mark.slow
def test_debug_encode_writes_every_output(debug_run: Path, kodim15: Path) -> None:
    names = {p.name for p in debug_run.iterdir()}
    assert {"results.json", "results.tsv", "decoded.png", "model.pt", "config.yaml", "preset.txt",
            "fingerprint.json", "tensorboard", "csv"} <= names
    assert "state.pt" not in names  # resume state is dropped once the encode is complete
    results = json.loads((debug_run / "results.json").read_text())
    for key in ("psnr_db", "bpp", "bpp_latent", "bpp_nn", "loss", "lmbda", "n_iterations", "encoding_time_s",
                "mac_per_pixel", "height", "width", "preset"):
        assert key in results
    assert results["arch"] == "vlop" and results["ms_ssim"] is None  # 128 rows: too few for five MS-SSIM scales
    assert results["n_iterations"] <= 120 and results["preset"] == "debug"
    assert results["bpp"] == pytest.approx(results["bpp_latent"] + results["bpp_nn"])
    assert results["bpp_nn"] > 0  # the networks were quantised and their rate counted
    decoded = np.asarray(Image.open(debug_run / "decoded.png"), dtype=np.float64)
    original = np.asarray(Image.open(kodim15), dtype=np.float64)
    psnr = 10 * np.log10(255**2 / np.mean((decoded - original) ** 2))
    assert psnr == pytest.approx(results["psnr_db"], abs=0.01)
    assert psnr > 20  # 120 iterations are enough to get well past a flat image
    row = (debug_run / "results.tsv").read_text().splitlines()
    assert len(row) == 2 and dict(zip(row[0].split("\t"), row[1].split("\t")))["preset"] == "debug"


@pytest.mark.slow
def test_tensorboard_holds_stages_global_curves_images_and_hparams(debug_run: Path) -> None:
    events = EventAccumulator(str(debug_run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    for tag in ("warmup0/c0/loss", "warmup1/c1/psnr_db", "phase0/loss", "phase0/bpp_grid_0", "phase1/lr",
                "global/loss", "global/psnr_db", "global/bpp"):
        assert tag in tags["scalars"], tag
    assert {"phase0/decoded", "phase1/decoded", "phase2/decoded"} <= set(tags["images"])
    global_steps = [e.step for e in events.Scalars("global/loss")]
    assert global_steps == sorted(global_steps) and global_steps[-1] > 50
    assert "preset/text_summary" in tags["tensors"]
    assert "_hparams_/session_start_info" in tags["tensors"] or "hparams" in str(events.PluginTagToContent("hparams"))
    with open(debug_run / "csv" / "version_0" / "metrics.csv") as handle:
        columns = next(csv.reader(handle))
    assert "phase0/psnr_db" in columns and "global/loss" in columns


@pytest.mark.slow
def test_rerun_reports_and_other_config_is_refused(debug_run: Path, kodim15: Path, capsys) -> None:
    output = debug_run.parent
    assert fit.main(_debug_args(kodim15, output)) == 0
    assert "already encoded" in capsys.readouterr().err
    assert fit.main(_debug_args(kodim15, output, "--seed", "7")) == 2
    err = capsys.readouterr().err
    assert "different image or config" in err and err.count("\n") == 1


@pytest.mark.slow
def test_yuv420_encode_writes_a_yuv_in_the_source_format(data_dir: Path, tmp_path: Path) -> None:
    source = data_dir / "images" / "kodim15_192x128_01p_yuv420_8b.yuv"
    args = ["--config", str(CONFIGS / "debug.yaml"), "--input", str(source), "--output_dir", str(tmp_path)]
    assert fit.main(args) == 0
    run_dir = tmp_path / "kodim15_192x128_01p_yuv420_8b_l0.001"
    decoded = run_dir / "decoded_192x128_yuv420_8b.yuv"
    assert decoded.stat().st_size == source.stat().st_size
    a = np.frombuffer(decoded.read_bytes(), np.uint8).astype(np.float64)
    b = np.frombuffer(source.read_bytes(), np.uint8).astype(np.float64)
    psnr = 10 * np.log10(255**2 / np.mean((a - b) ** 2))  # all samples weigh the same, as in the loss
    results = json.loads((run_dir / "results.json").read_text())
    assert results["color_space"] == "yuv420" and psnr == pytest.approx(results["psnr_db"], abs=0.01)


def test_a_damaged_checkpoint_is_reported_in_one_line(kodim15: Path, tmp_path: Path, capsys) -> None:
    assert fit.main(_debug_args(kodim15, tmp_path, "--job_duration_min", "1e-4")) == fit.EXIT_REQUEUE
    checkpoint = tmp_path / "kodim15_192x128_l0.001" / "checkpoint.ckpt"
    assert checkpoint.exists()
    capsys.readouterr()
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    assert fit.main(_debug_args(kodim15, tmp_path)) == fit.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err == (f"error: {checkpoint}: not a readable checkpoint (RuntimeError): "
                   "remove it to start this encode over\n")


@pytest.mark.slow
def test_arch_auto_picks_a_decoder_and_resumes_exactly(kodim15: Path, tmp_path: Path) -> None:
    """lop5, mop5 and hop5 compete in the warm-up; stopping after each of the first warm-up
    stages and rerunning gives the bytes of an uninterrupted encode (each candidate is
    rebuilt with its own decoder)."""
    crop = tmp_path / "kodim15_96x64.png"
    with Image.open(kodim15) as image:
        image.crop((40, 30, 136, 94)).save(crop)
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    args = ["--config", str(CONFIGS / "debug.yaml"), "--input", str(crop), "--arch", "auto5",
            "--checkpoint_interval_s", "0"]
    assert fit.main(args + ["--output_dir", str(whole)]) == 0
    for _ in range(4):  # a stop at the first safe point of each run: after each warm-up stage
        assert fit.main(args + ["--output_dir", str(stopped), "--job_duration_min", "1e-5"]) == fit.EXIT_REQUEUE
    assert fit.main(args + ["--output_dir", str(stopped)]) == 0
    results = json.loads((whole / "kodim15_96x64_l0.001" / "results.json").read_text())
    assert results["arch"] in ("lop5", "mop5", "hop5")
    assert json.loads((stopped / "kodim15_96x64_l0.001" / "results.json").read_text())["arch"] == results["arch"]
    cool = "kodim15_96x64_l0.001/kodim15_96x64.cool"
    assert (stopped / cool).read_bytes() == (whole / cool).read_bytes()


@pytest.mark.slow
def test_intra5_resumes_exactly_through_soap_and_rdoq(kodim15: Path, tmp_path: Path) -> None:
    """Stops every second or so (inside training phases, where SOAP's state is checkpointed,
    and inside RDOQ) and reruns until done: the bytes of the uninterrupted encode."""
    crop = tmp_path / "kodim15_64x48.png"
    with Image.open(kodim15) as image:
        image.crop((64, 40, 128, 88)).save(crop)
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    args = ["--input", str(crop), "--preset", "intra5", "--n_itr", "1000", "--arch", "lop5",
            "--checkpoint_interval_s", "0.3"]
    assert fit.main(args + ["--output_dir", str(whole)]) == 0
    runs = 0
    while fit.main(args + ["--output_dir", str(stopped), "--job_duration_min", "0.02"]) == fit.EXIT_REQUEUE:
        runs += 1
    assert runs >= 3
    cool = "kodim15_64x48_l0.001/kodim15_64x48.cool"
    assert (stopped / cool).read_bytes() == (whole / cool).read_bytes()
