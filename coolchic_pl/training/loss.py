"""Rate-distortion loss: D + lambda * R / N_pixels, R in bits."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def mse(decoded: Tensor, target: Tensor) -> Tensor:
    return torch.mean((decoded - target) ** 2)


def rate_distortion_loss(distortion: Tensor, rate_bits: Tensor | float, lmbda: float, n_pixels: int) -> Tensor:
    """Rate is per image pixel (not per sample), as in the reference."""
    return distortion + lmbda * rate_bits / n_pixels


def psnr_db(mse_value: float, max_db: float = 100.0) -> float:
    return max_db if mse_value <= 0 else min(max_db, -10.0 * math.log10(mse_value))
