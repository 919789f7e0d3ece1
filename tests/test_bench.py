"""RD benchmark pieces: Bjontegaard deltas, classical sweeps, outputs and resume."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from golden import GOLDEN
from PIL import Image

from coolchic_pl.bench import rd
from coolchic_pl.bench.__main__ import main as bench_main
from coolchic_pl.bench.bdrate import bd_psnr, bd_rate
from coolchic_pl.bench.classical import available_codecs, sweep
from coolchic_pl.bench.plot import plot_rd
from coolchic_pl.bench.speed import main as speed_main
from coolchic_pl.bench.speed import side_by_side
from coolchic_pl.fit import main as fit_main
from coolchic_pl.io import read_frame

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RATES = [0.12, 0.25, 0.5, 0.9, 1.6]
PSNRS = [27.0, 30.1, 33.4, 36.2, 39.5]


def test_bd_rate_of_a_constant_rate_factor_is_that_factor() -> None:
    assert bd_rate(RATES, PSNRS, RATES, PSNRS) == pytest.approx(0.0, abs=1e-9)
    assert bd_rate(RATES, PSNRS, [r * 0.8 for r in RATES], PSNRS) == pytest.approx(-20.0, abs=1e-6)
    assert bd_rate(RATES, PSNRS, [r * 1.5 for r in RATES], PSNRS) == pytest.approx(50.0, abs=1e-6)
    assert bd_psnr(RATES, PSNRS, RATES, [p + 0.7 for p in PSNRS]) == pytest.approx(0.7, abs=1e-9)


def test_bd_needs_overlapping_curves() -> None:
    assert math.isnan(bd_rate(RATES, PSNRS, RATES, [p + 20 for p in PSNRS]))
    with pytest.raises(ValueError):
        bd_rate([0.1], [30.0], RATES, PSNRS)


def test_side_by_side_holds_every_copy_and_speed_refuses_zero_copies(kodim15: Path) -> None:
    frame = read_frame(kodim15)
    wide = side_by_side(frame, 3)
    assert (wide.height, wide.width) == (frame.height, 3 * frame.width)
    for k in range(3):
        assert wide.planes[0][..., k * frame.width:(k + 1) * frame.width].equal(frame.planes[0])
    with pytest.raises(SystemExit) as stopped:
        speed_main(["--copies", "0"])
    assert stopped.value.code == 2


def test_classical_sweeps_are_monotone(kodim15: Path) -> None:
    image = rd.centre_crop(Image.open(kodim15).convert("RGB"), 96, 64)
    names = [codec.name for codec in available_codecs()]
    assert {"JPEG", "WebP", "JPEG 2000", "AVIF", "HEVC-intra", "JPEG XL", "VVC-intra"} <= set(names)
    for codec in available_codecs():
        points = sweep(codec, image)
        rates = [p["bpp"] for p in points]
        psnrs = [p["psnr_rgb"] for p in sorted(points, key=lambda p: p["bpp"])]
        assert rates == sorted(rates), codec.name  # higher quality setting, more bits
        assert psnrs == sorted(psnrs), codec.name  # more bits, higher PSNR
        assert all(0 < r < 24 for r in rates)


@pytest.mark.slow
def test_rd_outputs_and_resume(data_dir: Path, tmp_path: Path, capsys) -> None:
    args = ["rd", "--images", str(data_dir / "kodak" / "kodim03.png"), "--crop", "64x48", "--lmbdas", "0.02,0.002",
            "--config", str(CONFIGS / "debug.yaml"), "--out", str(tmp_path), "--codecs", "JPEG", "WebP"]
    assert bench_main(args) == 0
    table = capsys.readouterr().out
    assert "JPEG" in table and "WebP" in table and "%" in table
    document = json.loads((tmp_path / "results" / "coolchic_pl" / "kodim03.json").read_text())
    assert set(document) == {"name", "description", "results"}
    assert set(document["results"]) == {"bpp", "psnr-rgb"} and len(document["results"]["bpp"]) == 2
    jpeg = json.loads((tmp_path / "results" / "jpeg" / "kodim03.json").read_text())
    assert jpeg["name"] == "JPEG" and "4:2:0" in jpeg["description"]
    rows = (tmp_path / "points.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["codec", "image", "setting", "bpp", "psnr_rgb", "psnr_yuv"] and len(rows) > 10
    summary = json.loads((tmp_path / "bd_rate.json").read_text())
    assert set(summary) == {"JPEG", "WebP"} and "kodim03" in summary["JPEG"]["per_image"]
    assert (tmp_path / "rd.png").stat().st_size > 1000
    assert Image.open(tmp_path / "images" / "kodim03.png").size == (64, 48)

    encoded = {path: path.stat().st_mtime_ns for path in (tmp_path / "coolchic").rglob("*.cool")}
    assert len(encoded) == 2
    assert bench_main(args) == 0
    err = capsys.readouterr().err
    assert err.count("] skipped ") == 2 and "to run on" not in err  # read back, no worker started
    assert encoded == {path: path.stat().st_mtime_ns for path in (tmp_path / "coolchic").rglob("*.cool")}

    assert bench_main(["decode", "--rd_cost", str(tmp_path)]) == 0  # integer against float32 decoding
    cost = re.search(r"^kodim03\s+2\s+([\d.]+)\s+(-?[\d.]+)%$", capsys.readouterr().out, re.M)
    assert cost is not None and float(cost[1]) < 0.1 and abs(float(cost[2])) < 2


@pytest.mark.slow
def test_rd_with_one_lambda_prints_its_point_and_no_bd_rate(data_dir: Path, tmp_path: Path, capsys) -> None:
    args = ["rd", "--images", str(data_dir / "kodak" / "kodim03.png"), "--crop", "64x48", "--lmbdas", "0.02",
            "--config", str(CONFIGS / "debug.yaml"), "--out", str(tmp_path), "--codecs", "JPEG"]
    assert bench_main(args) == 0
    captured = capsys.readouterr()
    assert re.search(r"^kodim03 lambda 0.02: \d+\.\d{3} dB at \d\.\d{4} bpp$", captured.out, re.MULTILINE)
    assert "BD-rate needs two or more lambdas" in captured.err
    assert not (tmp_path / "bd_rate.json").exists()
    assert len((tmp_path / "points.tsv").read_text().splitlines()) > 2  # header, coolchic_pl, JPEG's sweep
    assert (tmp_path / "rd.png").stat().st_size > 1000  # the point among the classical curves


def test_rd_rejects_missing_images(tmp_path: Path, capsys) -> None:
    assert bench_main(["rd", "--images", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_published_anchors_are_shipped() -> None:
    per_image = rd.published_per_image()
    assert len(per_image) == 24 and all(len(points) == 5 for points in per_image.values())
    assert per_image["kodim01"][2] == {"bpp": 0.79645, "psnr_rgb": 32.3565}  # lambda 1e-3, Cool-Chic 4.2
    assert rd.published_per_image("5.0")["kodim15"][2] == {"bpp": 0.28164, "psnr_rgb": 35.2769}  # lambda 1e-3
    curves = rd.published_curves()
    assert {"VTM", "BPG444", "JPEG2000", "JPEG", "C3"} <= set(curves)
    assert any(name.startswith("Cool-Chic 4.2") for name in curves)


def test_compare_gives_the_bd_rate_of_one_run_against_another(tmp_path: Path, capsys) -> None:
    from coolchic_pl.bench import compare
    from coolchic_pl.bench.formats import compressai_json

    rates, psnrs = [0.1, 0.2, 0.4, 0.8], [27.0, 30.0, 33.0, 36.0]
    for name, scale in (("test", 0.5), ("reference", 1.0)):
        folder = tmp_path / name
        folder.mkdir()
        points = [{"bpp": r * scale, "psnr_rgb": p} for r, p in zip(rates, psnrs)]
        (folder / "kodim01.json").write_text(json.dumps(compressai_json("coolchic_pl", name, points)))
    (tmp_path / "test" / "kodim02.json").write_text((tmp_path / "test" / "kodim01.json").read_text())
    table = compare.compare(tmp_path / "test", tmp_path / "reference")
    assert list(table) == ["kodim01"] and table["kodim01"][0] == pytest.approx(-50.0)
    assert compare.main([str(tmp_path / "test"), str(tmp_path / "reference")]) == 0
    assert "-50.0 %" in capsys.readouterr().out


def test_rd_plot_of_video_quality(tmp_path: Path) -> None:
    """The video benchmark's figure: PSNR YUV curves, no published ones, any rate range."""
    curves = {"coolchic_pl": [{"bpp": 0.3, "psnr_yuv": 33.0}, {"bpp": 0.1, "psnr_yuv": 30.0}],
              "x265": [{"bpp": 0.2, "psnr_yuv": 31.0}, {"bpp": 3.5, "psnr_yuv": 45.0}]}
    path = tmp_path / "rd.png"
    assert plot_rd(curves, path, "BQSquare, IPP", "psnr_yuv", "PSNR YUV 6:1:1 (dB)", "coolchic_pl")
    with Image.open(path) as figure:
        assert figure.format == "PNG" and figure.size == (960, 720)


def test_quantize_bench_times_the_search_and_rdoq_of_a_finished_encode(kodim15: Path, tmp_path: Path) -> None:
    crop = tmp_path / "crop.png"
    with Image.open(kodim15) as image:
        image.crop((0, 0, 64, 48)).save(crop)
    assert fit_main(["--config", str(CONFIGS / "debug.yaml"), "--input", str(crop), "--arch", "lop5",
                     "--output_dir", str(tmp_path / "runs")]) == 0
    run_dir = tmp_path / "runs" / "crop_l0.001"
    command = [sys.executable, "-m", "coolchic_pl.bench", "quantize", str(run_dir)]
    lines = [subprocess.run(command, capture_output=True, text=True, timeout=300) for _ in range(2)]
    assert all(result.returncode == 0 for result in lines), lines[0].stderr
    found = re.fullmatch(r"q-step search [\d.]+ s, RDOQ [\d.]+ s \((\d+) tries\), loss (\S+) -> (\S+), digest (\w+)\n",
                         lines[0].stdout)
    assert found, lines[0].stdout
    tries, before, after = int(found[1]), float(found[2]), float(found[3])
    assert tries > 0 and after <= before
    assert lines[1].stdout.split("digest")[1] == lines[0].stdout.split("digest")[1]  # same decoder, same result

    wrong = subprocess.run([*command, "--image", str(kodim15)], capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and wrong.stderr.startswith("error: ") and "fitted to 64x48" in wrong.stderr


@pytest.mark.slow
def test_device_check_runs_every_check_on_the_cpu(kodim15: Path, data_dir: Path) -> None:
    """``bench gpu --device cpu`` on the bundled image with the debug preset: every check but
    compile passes (compile is skipped on the CPU), and the table holds the figures."""
    command = [sys.executable, "-m", "coolchic_pl.bench", "gpu", "--device", "cpu", "--image", str(kodim15),
               "--config", str(CONFIGS / "debug.yaml"),
               "--video", str(data_dir / "video" / "BQSquare_224x128_60p_5frames_yuv420_8b.yuv")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {name: state for state, name in re.findall(r"^(ok|skip|FAIL)\s+(\w+)", result.stdout, re.M)}
    assert lines == {"encode": "ok", "compile": "skip", "quantize": "ok", "resume": "ok", "decode": "ok",
                     "video": "ok"}, result.stdout
    assert "identical .cool" in result.stdout and "| encode ms/step |" in result.stdout


def test_device_check_refuses_a_missing_device_or_file(tmp_path: Path, capsys, monkeypatch) -> None:
    assert bench_main(["gpu", "--device", "cpu", "--image", str(tmp_path / "none.png")]) == 2
    assert "none.png: no such file" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_main(["gpu", "--device", "cuda"]) == 2
    assert "torch sees no CUDA device" in capsys.readouterr().err


def test_decode_bench_prints_its_parts(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "coolchic_pl.bench", "decode", str(GOLDEN / "hop.cool"),
               str(GOLDEN / "bqsquare_3frames.cool"), "--repeats", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if ".cool " in line}
    assert float(rows["hop.cool"][3]) > 0 and float(rows["bqsquare_3frames.cool"][5]) > 0  # entropy, warps
    assert float(rows["bqsquare_3frames.cool"][3]) > 0  # a video of format 4 has its entropy decoding timed too
    assert rows["bqsquare_3frames.cool"][1] == "3"
    total, megapixels_per_s, frames_per_s = (float(rows["bqsquare_3frames.cool"][i]) for i in (2, 7, 8))
    assert frames_per_s == pytest.approx(3 / total, rel=0.05, abs=0.1)
    assert megapixels_per_s == pytest.approx(224 * 128 * 3 / total / 1e6, rel=0.05, abs=0.01)


def test_speed_against_an_earlier_commit_times_both_trees(kodim15: Path, tmp_path: Path, capsys) -> None:
    """``--against``: this checkout and the files of a commit (here the checkout's own HEAD,
    so the test needs no particular history) are timed by two worker processes, and each
    line holds both figures and their ratio."""
    result = tmp_path / "speed.json"
    assert speed_main(["--images", str(kodim15), "--archs", "lop5", "--preset", "intra5", "--against", "HEAD",
                       "--steps", "1", "--repeats", "2", "--warmup", "0", "--json", str(result)]) == 0
    line = capsys.readouterr().out.strip()
    assert "this checkout" in line and "| HEAD" in line and "x slower" in line
    [timing] = json.loads(result.read_text())
    assert set(timing["ms_per_step"]) == {"this checkout", "HEAD"}
    assert all(len(blocks) == 2 and min(blocks) > 0 for blocks in timing["blocks"].values())


def test_speed_against_an_unknown_commit_is_one_error_line(capsys) -> None:
    assert speed_main(["--against", "no-such-commit"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: 'no-such-commit' is not a commit of the checkout at "
                                               f"{Path(__file__).resolve().parents[1]}")
