"""Motion models of inter frames: the integer affine and derived flows, and the affine model
the encoder fits to a real frame's estimated flow."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from coolchic_pl.fixedpoint.motionmodel import AFFINE_SCALE_BITS, affine_flow, derived_flow, rounded_division
from coolchic_pl.io import read_frame
from coolchic_pl.model.warp import shift, warp
from coolchic_pl.video.bitstream import to_444
from coolchic_pl.video.motion import estimate_motion, fit_affine, luma_psnr


def test_rounded_division_rounds_half_up_for_either_sign() -> None:
    values = np.array([-3, -2, -1, 0, 1, 2, 3, 5], dtype=np.int64)
    assert rounded_division(values, 2).tolist() == [-1, -1, 0, 0, 1, 1, 2, 3]
    assert rounded_division(values, -2).tolist() == [2, 1, 1, 0, 0, -1, -1, -2]
    assert rounded_division(values, 4).tolist() == [math.floor(v / 4 + 0.5) for v in values.tolist()]


def test_affine_flow_in_64ths_of_a_pixel() -> None:
    """flow_x = a0 + (a1 x' + a2 y') / 2^10 in 1/64 pel, x' and y' from the frame's centre."""
    one_percent = round(0.01 * 2**(6 + AFFINE_SCALE_BITS))  # a 1 % zoom: 0.01 pel per pixel
    flow = affine_flow((64, one_percent, 0, -32, 0, one_percent), 5, 7)
    assert flow.dtype == np.int64 and flow.shape == (2, 5, 7)
    assert flow[0, 2, 3] == 64 and flow[1, 2, 3] == -32  # the centre moves by the translation alone
    assert flow[0, 0, 0].item() == 64 + round(-3 * 0.01 * 64) and flow[0, :, 6].tolist() == [64 + 2] * 5
    assert flow[1, 4, 0].item() == -32 + 1 and (flow[1, 4] == flow[1, 4, 0]).all()


def test_derived_flow_scales_a_constant_motion_by_temporal_distance() -> None:
    """A source frame 4 whose flow to frame 0 is (-8, 4) pixels moves (2, -1) pixels per frame
    towards the future: frame 2 is (-4, 2) from frame 0 and (4, -2) from frame 4."""
    source = np.stack([np.full((6, 8), -8 * 64), np.full((6, 8), 4 * 64)]).astype(np.int64)
    to_past = derived_flow(source, 4, 0, 2, 0)
    to_future = derived_flow(source, 4, 0, 2, 4)
    assert np.array_equal(to_past, np.stack([np.full((6, 8), -4 * 64), np.full((6, 8), 2 * 64)]))
    assert np.array_equal(to_future, -to_past)
    with pytest.raises(ValueError):
        derived_flow(source, 4, 4, 2, 0)


def test_derived_flow_takes_the_motion_of_the_source_pixel_that_lands_here() -> None:
    """An 8-pixel block at columns 2-9 of frame 4 came from 4 pixels to the left in frame 2
    (2 pixels per frame). In frame 3 it covers columns 0-7: where the projection finds it,
    its motion towards frame 2 is 2 pixels to the left; columns 8 and 9, which it has not
    reached yet, do not move (taking the motion at the same position would move them)."""
    source = np.zeros((2, 1, 12), dtype=np.int64)
    source[0, 0, 2:10] = -4 * 64
    derived = derived_flow(source, 4, 2, 3, 2)
    assert derived[0, 0].tolist() == [0, 0] + [-128] * 6 + [0] * 4
    assert not derived[1].any()


@pytest.fixture(scope="module")
def bqsquare(data_dir: Path) -> torch.Tensor:
    return to_444(read_frame(data_dir / "video" / "BQSquare_224x128_60p_5frames_yuv420_8b.yuv", 0))


def test_the_affine_model_recovers_a_synthetic_zoom_and_shift(bqsquare: torch.Tensor) -> None:
    """Frame 0 of BQSquare zoomed by 4 % about its centre and moved by (6.5, -3.25) pixels:
    the fitted affine model (on top of the global translation) gives back the zoom and the
    shift to within a few hundredths of a pixel, and predicts the frame far better than the
    translation alone."""
    height, width = bqsquare.shape[-2:]
    zoom, (tx, ty) = 0.04, (6.5, -3.25)
    xs = torch.arange(width, dtype=torch.float32) - width // 2
    ys = torch.arange(height, dtype=torch.float32).view(-1, 1) - height // 2
    true_flow = torch.stack([tx + zoom * xs.expand(height, width), ty + zoom * ys.expand(height, width)])[None]
    target = warp(bqsquare, true_flow, 8)
    translation, flow = estimate_motion(target, bqsquare)
    parameters = fit_affine(flow)
    model = torch.from_numpy(affine_flow(parameters, height, width)).float()[None] / 64
    total = model + torch.tensor(translation, dtype=torch.float32).view(1, 2, 1, 1)
    inner = (slice(None), slice(None), slice(16, -16), slice(16, -16))  # away from the replicated borders
    assert (total - true_flow)[inner].abs().mean() < 0.05
    scale = 2**(6 + AFFINE_SCALE_BITS)
    assert parameters[1] / scale == pytest.approx(zoom, abs=2e-3) and parameters[5] / scale == pytest.approx(zoom, abs=2e-3)
    shifted = shift(bqsquare, *translation)
    assert luma_psnr(warp(shifted, model, 8)[inner], target[inner]) > luma_psnr(shifted[inner], target[inner]) + 10
