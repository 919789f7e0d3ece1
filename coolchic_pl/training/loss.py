"""Frame output post-processing and the rate-distortion loss: D + lambda * R / N_pixels."""

from __future__ import annotations

import torch
from torch import Tensor

from coolchic_pl.io import ColorSpace


def output_planes(raw: Tensor, color_space: ColorSpace, bitdepth: int, rounded: bool) -> tuple[Tensor, ...]:
    """Synthesis output [1, 3, H, W] -> the frame's planes, clamped to [0, 1].

    ``rounded`` (evaluation) snaps samples to the 2^bitdepth - 1 grid first, as writing the
    decoded file does. 4:2:0 keeps the top-left chroma sample of each 2x2 block.
    """
    if rounded:
        max_value = 2**bitdepth - 1
        raw = torch.round(raw * max_value) / max_value
    if color_space == "yuv420":
        return raw[:, :1].clamp(0.0, 1.0), raw[:, 1:2, ::2, ::2].clamp(0.0, 1.0), raw[:, 2:3, ::2, ::2].clamp(0.0, 1.0)
    return (raw.clamp(0.0, 1.0),)


def mse(decoded: tuple[Tensor, ...], target: tuple[Tensor, ...]) -> Tensor:
    """Mean squared error over every sample of every plane (4:2:0 weighs planes by size)."""
    if len(decoded) == 1:
        return torch.mean((decoded[0] - target[0]) ** 2)
    total = sum(torch.sum((d - t) ** 2) for d, t in zip(decoded, target))
    return total / sum(t.numel() for t in target)


def rate_distortion_loss(distortion: Tensor, rate_bits: Tensor | float, lmbda: float, n_pixels: int) -> Tensor:
    """Rate is per image pixel (not per sample), as in the reference."""
    return distortion + lmbda * rate_bits / n_pixels
