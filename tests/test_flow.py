"""Optical flow initialisation: accuracy on a known translation, prediction gain on real motion."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from coolchic_pl.io import read_frame
from coolchic_pl.video.bitstream import to_444
from coolchic_pl.model.warp import global_translation, shift, warp
from coolchic_pl.video.flow import estimate_flow
from coolchic_pl.video.motion import estimate_motion

BQSQUARE = Path("video") / "BQSquare_224x128_60p_5frames_yuv420_8b.yuv"
# Cropped off the kodim15 frames: its first column is a dark scanning border, which a
# translation would smear into the neighbouring flat background.
CROP = 4


@pytest.fixture(scope="module")
def kodim(kodim15: Path) -> Tensor:
    return read_frame(kodim15).planes[0]


@pytest.fixture(scope="module")
def bqsquare(data_dir: Path) -> tuple[Tensor, Tensor]:
    return to_444(read_frame(data_dir / BQSQUARE, 0)), to_444(read_frame(data_dir / BQSQUARE, 1))


def textured(image: Tensor) -> Tensor:
    """[H, W] mask of the pixels whose neighbourhood has enough luma gradient to show motion.

    Flat areas (the saturated background of kodim15 is a third of the frame) carry no motion
    information: any flow predicts them, so the flow there cannot be checked.
    """
    luma = (image * torch.tensor([0.2126, 0.7152, 0.0722]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    padded = F.pad(luma, (1, 1, 1, 1), mode="replicate")
    dx = padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]
    dy = padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]
    energy = dx * dx + dy * dy
    return F.avg_pool2d(energy, 9, stride=1, padding=4, count_include_pad=False)[0, 0] > 4e-3


def _zoom_and_shift(height: int, width: int, zoom: float, dx: float, dy: float) -> Tensor:
    """The backward flow of a zoom about the frame centre followed by a translation."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    return torch.stack([(xs - (width - 1) / 2) * (zoom - 1) + dx, (ys - (height - 1) / 2) * (zoom - 1) + dy])[None]


@pytest.mark.parametrize("zoom, dx, dy", [(1.0, 30.4, -25.7), (1.05, 12.3, -7.6), (0.95, -20.5, 9.2)])
def test_large_shift_and_zoom_of_a_real_frame_are_recovered(bqsquare: tuple[Tensor, Tensor], zoom: float,
                                                           dx: float, dy: float):
    """A BQSquare frame moved by up to 30 pixels and zoomed by 5 %: the global translation
    plus the flow give the true motion to within half a pixel on average (measured 0.04 to
    0.15), wherever the moved frame still shows the reference."""
    reference = bqsquare[0]
    h, w = reference.shape[-2:]
    true = _zoom_and_shift(h, w, zoom, dx, dy)
    target = warp(reference, true, 8)
    (tx, ty), flow = estimate_motion(target, reference)
    estimated = flow + torch.tensor([tx, ty], dtype=torch.float32).view(1, 2, 1, 1)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    source_x, source_y = xs + true[0, 0], ys + true[0, 1]
    inside = (source_x > 4) & (source_x < w - 5) & (source_y > 4) & (source_y < h - 5)
    inside &= (xs >= 8) & (xs < w - 8) & (ys >= 8) & (ys < h - 8)
    error = (estimated - true).norm(dim=1)[0][inside]
    assert inside.float().mean() > 0.3
    assert error.mean() < 0.5 and error.median() < 0.25, (error.mean(), error.median())


@pytest.mark.parametrize("dx, dy", [(0.3, -0.45), (1.3, 0.7), (-2.6, 1.5)])
def test_recovers_a_sub_pixel_translation(kodim: Tensor, dx: float, dy: float):
    h, w = kodim.shape[-2:]
    flow = torch.tensor([dx, dy]).view(1, 2, 1, 1).expand(1, 2, h, w).contiguous()
    inner = (..., slice(CROP, h - CROP), slice(CROP, w - CROP))
    reference, frame = kodim[inner], warp(kodim, flow, 8)[inner]
    error = (estimate_flow(frame, reference, rgb=True) - flow[inner]).norm(dim=1)[0]
    margin = 4
    error = error[margin:-margin, margin:-margin]
    mask = textured(reference)[margin:-margin, margin:-margin]
    print(f"flow ({dx}, {dy}): mean error {error[mask].mean():.3f} px over the textured interior "
          f"({mask.float().mean():.0%} of it), {error.mean():.3f} px over the whole interior")
    assert mask.float().mean() > 0.4
    assert error[mask].mean() < 0.15
    assert error.mean() < 0.35


def test_improves_the_prediction_of_real_motion(bqsquare: tuple[Tensor, Tensor]):
    reference, frame = bqsquare
    flow = estimate_flow(frame, reference)
    assert flow.shape == (1, 2, *frame.shape[-2:]) and torch.isfinite(flow).all()
    unshifted = F.mse_loss(reference, frame).item()
    translated = F.mse_loss(shift(reference, *global_translation(reference, frame)), frame).item()
    warped = F.mse_loss(warp(reference, flow), frame).item()
    print(f"BQSquare 0 -> 1 MSE: reference {unshifted:.3e}, global translation {translated:.3e}, "
          f"warped by the flow {warped:.3e}")
    # Observed: 1.29e-2, 9.3e-3 and 8.9e-4.
    assert warped < 0.25 * unshifted
    assert warped < 0.35 * translated


def test_is_deterministic_and_zero_for_identical_frames(bqsquare: tuple[Tensor, Tensor]):
    reference, frame = bqsquare
    assert torch.equal(estimate_flow(frame, reference), estimate_flow(frame, reference))
    # Not exactly 0: grid_sample's coordinate normalisation rounds the zero-flow positions.
    assert estimate_flow(reference, reference).abs().max() < 1e-3


def test_small_and_flat_frames_give_finite_flows():
    flat = torch.full((1, 3, 9, 13), 0.5)
    assert estimate_flow(flat, flat).abs().max() < 1e-6
    noise = torch.rand(1, 3, 9, 13)
    assert torch.isfinite(estimate_flow(noise, torch.rand(1, 3, 9, 13))).all()


def test_rejects_mismatched_frames():
    with pytest.raises(ValueError, match="must both be"):
        estimate_flow(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match="must both be"):
        estimate_flow(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))
