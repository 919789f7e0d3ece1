"""PSNR and MS-SSIM as every report computes them, checked against their definitions."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from coolchic_pl.io import read_frame
from coolchic_pl.metrics import MAX_PSNR_DB, ms_ssim, psnr_db


@pytest.fixture(scope="module")
def kodim01_crop(data_dir: Path) -> torch.Tensor:
    return read_frame(data_dir / "kodak" / "kodim01.png").planes[0][..., 100:356, 200:456].contiguous()


def test_psnr_weighs_every_sample_and_caps_identical_images(kodim01_crop: torch.Tensor) -> None:
    noisy = (kodim01_crop + 0.02 * torch.randn_like(kodim01_crop)).clamp(0, 1)
    mse = torch.mean((noisy.double() - kodim01_crop.double()) ** 2).item()
    assert psnr_db([noisy], [kodim01_crop]) == pytest.approx(-10 * math.log10(mse), abs=1e-4)
    # 4:2:0-like planes of different sizes count by their number of samples.
    luma, chroma = noisy[:, :1], noisy[:, 1:2, ::2, ::2]
    target_luma, target_chroma = kodim01_crop[:, :1], kodim01_crop[:, 1:2, ::2, ::2]
    errors = torch.cat([(luma - target_luma).reshape(-1), (chroma - target_chroma).reshape(-1)]).double()
    expected = -10 * math.log10(torch.mean(errors**2).item())
    assert psnr_db([luma, chroma], [target_luma, target_chroma]) == pytest.approx(expected, abs=1e-4)
    assert psnr_db([kodim01_crop], [kodim01_crop]) == MAX_PSNR_DB


def test_ms_ssim_on_images_large_enough_for_five_scales(kodim01_crop: torch.Tensor, kodim15: Path) -> None:
    assert ms_ssim(kodim01_crop, kodim01_crop) == pytest.approx(1.0)
    slightly, badly = (0.01, 0.1)
    scores = [ms_ssim((kodim01_crop + s * torch.randn_like(kodim01_crop)).clamp(0, 1), kodim01_crop)
              for s in (slightly, badly)]
    assert 1.0 > scores[0] > scores[1] > 0
    small = read_frame(kodim15).planes[0]  # 128 rows: fewer than five scales of an 11-tap window need
    assert ms_ssim(small, small) is None
