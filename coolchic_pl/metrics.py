"""Image quality metrics for every place that reports them: PSNR from the squared error
computed where the samples are, MS-SSIM by torchmetrics."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

# Identical images have an infinite PSNR, which JSON cannot hold; report this instead.
MAX_PSNR_DB = 100.0


def psnr_db(decoded: Sequence[Tensor], target: Sequence[Tensor], data_range: float = 1.0) -> float:
    """PSNR over every sample of every plane, so 4:2:0 planes weigh by their size, as in
    the training loss. The squared error is summed in double precision on the planes'
    device: torchmetrics' PSNR builds its constants on the default device instead, which
    breaks on a model held elsewhere."""
    squared_error = sum(torch.sum((d.double() - t.double()) ** 2) for d, t in zip(decoded, target))
    mean = squared_error.item() / sum(t.numel() for t in target)
    if mean == 0.0:
        return MAX_PSNR_DB
    return min(10.0 * math.log10(data_range**2 / mean), MAX_PSNR_DB)


def ms_ssim(decoded: Tensor, target: Tensor, data_range: float = 1.0) -> float | None:
    """MS-SSIM of [1, C, H, W] images (all channels averaged), with the standard five
    scales and 11-tap Gaussian window; None for images too small for five scales (under
    176 pixels on a side), where the standard value is not defined."""
    try:
        value = multiscale_structural_similarity_index_measure(decoded, target, data_range=data_range)
    except ValueError:
        return None
    return value.item()


def yuv_psnrs(decoded: Sequence[Tensor], target: Sequence[Tensor], data_range: float = 1.0) -> dict[str, float]:
    """PSNR of the Y, U and V planes of a YUV frame (4:2:0 planes, or one [1, 3, H, W]
    4:4:4 tensor) and their 6:1:1 mean, the figure video codecs are compared on."""
    if len(decoded) == 1:
        decoded, target = decoded[0].split(1, dim=1), target[0].split(1, dim=1)
    y, u, v = (psnr_db((d,), (t,), data_range) for d, t in zip(decoded, target))
    return {"psnr_y": y, "psnr_u": u, "psnr_v": v, "psnr_yuv": (6 * y + u + v) / 8}
