"""Motion compensation: sub-pixel warps, integer shifts, global translation search."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from coolchic_pl.io import read_frame
from coolchic_pl.video.bitstream import to_444
from coolchic_pl.model.warp import global_translation, quantize_flow, shift, warp, warp_macs_per_pixel

FILTER_SIZES = (2, 4, 6, 8)
BQSQUARE = Path("video") / "BQSquare_224x128_60p_5frames_yuv420_8b.yuv"


def constant_flow(dx: float, dy: float, height: int, width: int) -> Tensor:
    return torch.tensor([dx, dy]).view(1, 2, 1, 1).expand(1, 2, height, width).contiguous()


@pytest.fixture(scope="module")
def kodim(kodim15: Path) -> Tensor:
    return read_frame(kodim15).planes[0]


@pytest.fixture(scope="module")
def bqsquare(data_dir: Path) -> Tensor:
    return to_444(read_frame(data_dir / BQSQUARE, 0))


def gather_nearest(reference: Tensor, flow: Tensor) -> Tensor:
    """Per-pixel reference(clamp(x + fx), clamp(y + fy)) for integer-valued flows, written independently."""
    _, c, h, w = reference.shape
    xs = (torch.arange(w) + flow[0, 0].long()).clamp(0, w - 1)
    ys = (torch.arange(h).view(-1, 1) + flow[0, 1].long()).clamp(0, h - 1)
    return reference[0][:, ys, xs].unsqueeze(0)


def bilinear_by_hand(reference: Tensor, flow: Tensor) -> Tensor:
    """Bilinear interpolation of the border-replicated frame, from its textbook definition."""
    _, _, h, w = reference.shape
    x = (torch.arange(w) + flow[0, 0]).clamp(0, w - 1)
    y = (torch.arange(h).view(-1, 1) + flow[0, 1]).clamp(0, h - 1)
    x0, y0 = x.floor().long(), y.floor().long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    ax, ay = x - x0, y - y0
    plane = reference[0]
    top = plane[:, y0, x0] * (1 - ax) + plane[:, y0, x1] * ax
    bottom = plane[:, y1, x0] * (1 - ax) + plane[:, y1, x1] * ax
    return (top * (1 - ay) + bottom * ay).unsqueeze(0)


def band_limited(height: int, width: int, dx: float = 0.0, dy: float = 0.0) -> Tensor:
    """A sum of two sinusoids (both below 0.25 cycle / pixel) sampled at (x + dx, y + dy)."""
    y = torch.arange(height, dtype=torch.float64).view(-1, 1) + dy
    x = torch.arange(width, dtype=torch.float64) + dx
    values = (0.5 + 0.2 * torch.cos(2 * math.pi * (0.21 * x + 0.13 * y))
              + 0.15 * torch.sin(2 * math.pi * (0.07 * x - 0.17 * y) + 1.0))
    return values.expand(1, 3, height, width).float().contiguous()


@pytest.mark.parametrize("filter_size", FILTER_SIZES)
@pytest.mark.parametrize("dx, dy", [(0, 0), (3, -2), (-7, 5), (40, -300)])
def test_integer_constant_flow_is_the_shift_everywhere(kodim: Tensor, filter_size: int, dx: int, dy: int):
    # Every filter samples the border-replicated frame, so the borders agree too; the sinc
    # taps are exactly 0 and 1 there, grid_sample only rounds its coordinate normalisation.
    warped = warp(kodim, constant_flow(dx, dy, *kodim.shape[-2:]), filter_size)
    expected = shift(kodim, dx, dy)
    if filter_size >= 6:
        assert torch.equal(warped, expected)
    else:
        torch.testing.assert_close(warped, expected, rtol=0, atol=2e-5)


@pytest.mark.parametrize("filter_size", FILTER_SIZES)
def test_integer_varying_flow_gathers_the_pointed_samples(kodim: Tensor, filter_size: int):
    flow = torch.randint(-6, 7, (1, 2, *kodim.shape[-2:])).float()
    warped = warp(kodim, flow, filter_size)
    expected = gather_nearest(kodim, flow)
    if filter_size >= 6:
        assert torch.equal(warped, expected)
    else:
        torch.testing.assert_close(warped, expected, rtol=0, atol=2e-5)


def test_zero_flow_is_the_identity_for_a_batch():
    reference = torch.rand(2, 5, 17, 23)
    for filter_size in FILTER_SIZES:
        torch.testing.assert_close(warp(reference, torch.zeros(2, 2, 17, 23), filter_size), reference,
                                   rtol=0, atol=1e-5)


def test_bilinear_matches_the_textbook_definition(kodim: Tensor):
    flow = torch.randn(1, 2, *kodim.shape[-2:]) * 4
    torch.testing.assert_close(warp(kodim, flow, 2), bilinear_by_hand(kodim, flow), rtol=0, atol=1e-5)


def test_flow_channel_0_is_horizontal(kodim: Tensor):
    # Moving the sampling position right by one pixel reads the next column.
    warped = warp(kodim, constant_flow(1.0, 0.0, *kodim.shape[-2:]), 8)
    assert torch.equal(warped[..., :-1], kodim[..., 1:])


@pytest.mark.parametrize("dx, dy", [(0.37, -0.61), (0.5, 0.5), (-1.25, 2.8)])
def test_longer_filters_reproduce_a_sub_pixel_shift_better(dx: float, dy: float):
    reference = band_limited(64, 96)
    truth = band_limited(64, 96, dx, dy)
    flow = constant_flow(dx, dy, 64, 96)
    error = {n: (warp(reference, flow, n) - truth)[..., 8:-8, 8:-8].abs().mean().item() for n in (2, 4, 8, 12)}
    print(f"shift ({dx}, {dy}) mean abs error by filter size: {error}")
    assert error[8] < 0.15 * error[2]
    assert error[8] < 0.6 * error[4]
    assert error[12] < error[8] < 0.003


def test_sinc_is_close_to_bicubic_on_smooth_content(kodim: Tensor):
    blur = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16
    kernel = (blur.view(-1, 1) * blur).expand(3, 1, 5, 5)
    smooth = F.conv2d(F.pad(kodim, (2, 2, 2, 2), mode="replicate"), kernel, groups=3)
    flow = constant_flow(0.3, -0.7, *kodim.shape[-2:])
    sinc = warp(smooth, flow, 8)[..., 8:-8, 8:-8]
    assert (sinc - warp(smooth, flow, 4)[..., 8:-8, 8:-8]).abs().mean() < 0.004
    assert (sinc - warp(smooth, flow, 2)[..., 8:-8, 8:-8]).abs().mean() < 0.01


@pytest.mark.parametrize("filter_size", FILTER_SIZES)
def test_gradients_reach_the_flow_and_the_reference(kodim: Tensor, filter_size: int):
    reference = kodim.clone().requires_grad_()
    flow = (torch.randn(1, 2, *kodim.shape[-2:]) * 2).requires_grad_()
    target = torch.rand_like(kodim)
    F.mse_loss(warp(reference, flow, filter_size), target).backward()
    for grad in (flow.grad, reference.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_gradient_at_integer_flow_is_finite_and_non_zero(kodim: Tensor):
    # At s = 0 the k = 0 tap takes the 0 / 0 branch; the flow must still get a gradient.
    flow = torch.zeros(1, 2, *kodim.shape[-2:], requires_grad=True)
    F.mse_loss(warp(kodim, flow, 8), shift(kodim, 1, 0)).backward()
    assert torch.isfinite(flow.grad).all() and flow.grad[0, 0].abs().sum() > 0


def test_sinc_gradients_match_finite_differences():
    torch.manual_seed(1)
    reference = torch.rand(1, 2, 7, 9, dtype=torch.float64, requires_grad=True)
    # Fractional parts kept away from 0 and 1 so that finite differences do not cross a floor.
    whole = torch.randint(-3, 4, (1, 2, 7, 9)).double()
    flow = (whole + 0.1 + 0.8 * torch.rand(1, 2, 7, 9, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda r, f: warp(r, f, 6), (reference, flow))


def test_quantized_flow_is_on_the_1_64_grid():
    flow = torch.randn(1, 2, 16, 16) * 10
    quantized = quantize_flow(flow)
    steps = quantized * 64
    assert torch.equal(steps, steps.round())
    assert (quantized - flow).abs().max() <= 1 / 128 + 1e-6
    assert torch.equal(quantize_flow(flow, 4) * 4, (quantize_flow(flow, 4) * 4).round())


@pytest.mark.parametrize("filter_size", [0, 1, 3, 7, -2])
def test_invalid_filter_sizes_are_rejected(filter_size: int):
    with pytest.raises(ValueError, match="even and >= 2"):
        warp(torch.rand(1, 3, 8, 8), torch.zeros(1, 2, 8, 8), filter_size)
    with pytest.raises(ValueError, match="even and >= 2"):
        warp_macs_per_pixel(filter_size, 4)


def test_flow_shape_must_match_the_reference():
    with pytest.raises(ValueError, match="flow must be"):
        warp(torch.rand(1, 3, 8, 8), torch.zeros(1, 2, 8, 9))


def test_shift_replicates_the_borders():
    reference = torch.arange(12.0).view(1, 1, 3, 4)
    assert shift(reference, 1, 0)[0, 0].tolist() == [[1, 2, 3, 3], [5, 6, 7, 7], [9, 10, 11, 11]]
    assert shift(reference, 0, -1)[0, 0].tolist() == [[0, 1, 2, 3], [0, 1, 2, 3], [4, 5, 6, 7]]
    assert shift(reference, -10, 10)[0, 0].tolist() == [[8, 8, 8, 8]] * 3


def test_warp_macs_per_pixel():
    assert warp_macs_per_pixel(8, 4) == (64 - 8) / 4 + 16
    assert warp_macs_per_pixel(2, 1) == 6


@pytest.mark.parametrize("dx, dy", [(6, -3), (5, 7), (-9, 4), (1, -1), (0, 0)])
def test_global_translation_recovers_a_replicated_shift(kodim: Tensor, bqsquare: Tensor, dx: int, dy: int):
    assert global_translation(kodim, shift(kodim, dx, dy)) == (dx, dy)
    assert global_translation(bqsquare, shift(bqsquare, dx, dy)) == (dx, dy)


@pytest.mark.parametrize("dx, dy", [(6, -3), (5, 7), (-13, -11)])
def test_global_translation_recovers_the_offset_between_two_crops(kodim: Tensor, bqsquare: Tensor, dx: int,
                                                                 dy: int):
    # target(p) = reference(p + (dx, dy)) inside the frame, new content at its borders.
    margin = 16
    for image in (kodim, bqsquare):
        h, w = image.shape[-2:]
        reference = image[..., margin:h - margin, margin:w - margin]
        target = image[..., margin + dy:h - margin + dy, margin + dx:w - margin + dx]
        assert global_translation(reference, target) == (dx, dy)


def test_global_translation_returns_python_ints_and_checks_shapes(bqsquare: Tensor):
    dx, dy = global_translation(bqsquare, shift(bqsquare, 2, 3))
    assert type(dx) is int and type(dy) is int
    with pytest.raises(ValueError, match="differ in shape"):
        global_translation(bqsquare, bqsquare[..., 1:])
