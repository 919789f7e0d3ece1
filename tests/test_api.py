"""The Python API, used as the README shows it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from coolchic_pl import CompressResult, compress, decompress, decompress_frames, load_config
from coolchic_pl.io import FrameData, read_frame
from golden import GOLDEN

REPO = Path(__file__).resolve().parents[1]


def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    code = re.search(r"## Python API\n\n```python\n(.*?)```", readme, re.S)[1]
    (tmp_path / "configs").symlink_to(REPO / "configs")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"\d+\.\d\d dB at \d\.\d{3} bpp in runs/\S+\.cool\n", result.stdout), result.stdout
    assert len(list((tmp_path / "runs").glob("*/*.cool"))) == 1


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return load_config(REPO / "configs" / "debug.yaml", output_dir=str(tmp_path_factory.mktemp("api")))


def test_a_tensor_and_a_yuv_frame_compress_and_decompress(config, kodim15: Path, data_dir: Path) -> None:
    rgb = read_frame(kodim15).planes[0]
    result = compress(rgb[0], config, progress=open(os.devnull, "w"))
    assert isinstance(result, CompressResult) and result.bitstream.is_file() and result.psnr_db > 25
    assert result.bpp == pytest.approx(8 * result.bitstream.stat().st_size / rgb[0, 0].numel())
    decoded = decompress(result.bitstream)
    assert decoded.shape == rgb.shape and torch.equal(decoded, decompress(result.bitstream.read_bytes()))
    assert type(result.decoder()).__name__ == "CoolChic"
    yuv = read_frame(data_dir / "images" / "kodim15_192x128_01p_yuv420_10b.yuv")
    result = compress(yuv, config, progress=open(os.devnull, "w"))
    frames = decompress_frames(result.bitstream)
    assert isinstance(frames[0], FrameData) and frames[0].bitdepth == 10 and frames[0].color_space == "yuv420"
    assert result.bitstream.parent.parent == Path(config.output_dir) and result.results["bitdepth"] == 10


def test_bad_arguments_are_one_line_value_errors(config) -> None:
    with pytest.raises(ValueError, match="unknown config key.*: lambda"):
        load_config(**{"lambda": 0.1})
    with pytest.raises(ValueError, match=r"RGB \[3, H, W\]"):
        compress(torch.zeros(1, 128, 192), config)
    with pytest.raises(ValueError, match="one decoder per frame"):
        CompressResult(Path("."), GOLDEN / "bqsquare_3frames.cool", 0.0, 0.0, {}).decoder()
    assert decompress(GOLDEN / "bqsquare_3frames.cool").shape == (3, 3, 128, 224)
