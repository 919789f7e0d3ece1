"""Dense optical flow that initialises the motion Cool-chic of P and B frames.

The reference encoder runs the pretrained RAFT network here. No network weights can be
downloaded in this project, so the flow comes from a classical estimator instead: a
coarse-to-fine, iteratively warped, regularised Lucas-Kanade solve. It is a few tensor
operations per pyramid level, deterministic, and fast on a CPU, and its output is only a
starting point: the motion Cool-chic is then trained on the rate-distortion loss, which
fixes what a classical estimator gets wrong.

Its limits are those of local differential methods: motion is assumed smooth within the
structure-tensor window, so motion boundaries and thin moving objects are blurred; flat
areas and edges (the aperture problem) get the regularised minimum-norm update, i.e. they
mostly inherit the coarser levels' flow; occlusions and brightness changes are not
modelled; and displacements much larger than the coarsest level resolves (a few pixels
there, times 2^levels) are missed, which is why references are first aligned by the global
translation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from coolchic_pl.model.warp import warp

# BT.709 luma weights, for RGB input.
_RGB_TO_LUMA = (0.2126, 0.7152, 0.0722)
# 5-point central difference: more accurate than (x[+1] - x[-1]) / 2 on textured content.
_DERIVATIVE = (1 / 12, -8 / 12, 0.0, 8 / 12, -1 / 12)


def estimate_flow(frame: Tensor, reference: Tensor, *, rgb: bool = False, min_size: int = 16, iterations: int = 3,
                  window_sigma: float = 2.0, regularisation: float = 1e-4) -> Tensor:
    """Backward flow [1, 2, H, W] (x then y, in pixels) such that ``warp(reference, flow)`` ~ ``frame``.

    ``frame`` and ``reference`` are [1, 3, H, W] in [0, 1]; the flow is estimated on the
    luma, channel 0 of YUV input or the BT.709 mix of RGB input (``rgb=True``). The pyramid
    halves the frame until its smaller side would drop below ``min_size``; each level runs
    ``iterations`` warp-and-solve steps with a Gaussian structure-tensor window of
    ``window_sigma`` pixels and Tikhonov ``regularisation`` (in squared-gradient units of
    [0, 1] samples) that keeps flat areas at the coarser estimate.
    """
    if frame.shape != reference.shape or frame.dim() != 4 or frame.shape[:2] != (1, 3):
        raise ValueError(f"frame and reference must both be [1, 3, H, W], got {tuple(frame.shape)} and "
                         f"{tuple(reference.shape)}")
    with torch.no_grad():
        targets = _pyramid(_prefilter(_luma(frame.float(), rgb)), min_size)
        sources = _pyramid(_prefilter(_luma(reference.float(), rgb)), min_size)
        window = _gaussian_kernel(window_sigma)
        flow = torch.zeros(1, 2, *targets[-1].shape[-2:])
        for target, source in zip(reversed(targets), reversed(sources)):
            flow = _upsample_flow(flow, target.shape[-2:])
            for _ in range(iterations):
                flow = flow + _lucas_kanade_step(target, source, flow, window, regularisation)
                if EXP["median_each"]:
                    flow = _median3x3(flow)
            if not EXP["median_each"]:
                flow = _median3x3(flow)
    return flow.to(frame.dtype)


import os
EXP = dict(n=2, pre=0.0, median_each=False, prior=0)
EXP.update(eval(os.environ.get("EXP", "{}")))


def _prefilter(x):
    return _separable(x, _gaussian_kernel(EXP["pre"])) if EXP["pre"] else x


def _luma(image: Tensor, rgb: bool) -> Tensor:
    if not rgb:
        return image[:, :1]
    weights = torch.tensor(_RGB_TO_LUMA, dtype=image.dtype).view(1, 3, 1, 1)
    return (image * weights).sum(1, keepdim=True)


def _gaussian_kernel(sigma: float) -> Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def _separable(image: Tensor, kernel: Tensor) -> Tensor:
    """Filter every channel of [1, C, H, W] with ``kernel`` along x then y, borders replicated."""
    c = image.shape[1]
    radius = kernel.numel() // 2
    horizontal = kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    image = F.conv2d(F.pad(image, (radius, radius, 0, 0), mode="replicate"), horizontal, groups=c)
    return F.conv2d(F.pad(image, (0, 0, radius, radius), mode="replicate"), vertical, groups=c)


def _pyramid(image: Tensor, min_size: int) -> list[Tensor]:
    """Finest first; each level is blurred (against aliasing) and area-downsampled by 2."""
    levels = [image]
    blur = _gaussian_kernel(1.0)
    while min(levels[-1].shape[-2:]) // 2 >= min_size:
        h, w = levels[-1].shape[-2:]
        levels.append(F.interpolate(_separable(levels[-1], blur), size=((h + 1) // 2, (w + 1) // 2), mode="area"))
    return levels


def _upsample_flow(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize the flow field to ``size`` and scale the displacements by the same factors."""
    h, w = flow.shape[-2:]
    if (h, w) == tuple(size):
        return flow
    scale = torch.tensor([size[1] / w, size[0] / h]).view(1, 2, 1, 1)
    return F.interpolate(flow, size=tuple(size), mode="bilinear", align_corners=False) * scale


def _gradients(image: Tensor) -> tuple[Tensor, Tensor]:
    kernel = torch.tensor(_DERIVATIVE, dtype=image.dtype)
    dx = F.conv2d(F.pad(image, (2, 2, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    dy = F.conv2d(F.pad(image, (0, 0, 2, 2), mode="replicate"), kernel.view(1, 1, -1, 1))
    return dx, dy


def _lucas_kanade_step(target: Tensor, source: Tensor, flow: Tensor, window: Tensor, regularisation: float) -> Tensor:
    """Flow increment solving the windowed, regularised linearised brightness constancy.

    With the source warped by the current flow, target ~ warped + gx du + gy dv; the 2x2
    normal equations of that over a Gaussian window, plus ``regularisation`` on the
    diagonal, are solved in closed form per pixel. The gradients are those of the warped
    source and the target averaged, which is more accurate than either alone.
    """
    warped = warp(source, flow, filter_size=EXP["n"])
    wx, wy = _gradients(warped)
    tx, ty = _gradients(target)
    gx, gy = 0.5 * (wx + tx), 0.5 * (wy + ty)
    error = target - warped
    moments = _separable(torch.cat([gx * gx, gx * gy, gy * gy, gx * error, gy * error], dim=1), window)
    sxx, sxy, syy, sxe, sye = moments.unbind(1)
    sxx = sxx + regularisation
    syy = syy + regularisation
    if EXP["prior"]:
        pull = regularisation * (_separable(flow, _gaussian_kernel(EXP["prior"])) - flow)
        sxe = sxe + pull[:, 0]
        sye = sye + pull[:, 1]
    determinant = sxx * syy - sxy * sxy
    du = (syy * sxe - sxy * sye) / determinant
    dv = (sxx * sye - sxy * sxe) / determinant
    return torch.stack([du, dv], dim=1)


def _median3x3(flow: Tensor) -> Tensor:
    """3x3 median of each flow component: removes isolated outliers without blurring motion edges."""
    padded = F.pad(flow, (1, 1, 1, 1), mode="replicate")
    patches = padded.unfold(2, 3, 1).unfold(3, 3, 1)
    return patches.reshape(*flow.shape, 9).median(dim=-1).values
