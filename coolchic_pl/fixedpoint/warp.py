"""Motion compensation in integers: flows in 1/64 pel, filter taps in 2^-16 units.

A tap table row holds the N taps for one of the 64 fractional positions, each rounded half
up to a multiple of 2^-16: bilinear (N = 2), bicubic with a = -0.75 (N = 4) and the
windowed sinc of :mod:`coolchic_pl.model.warp` (N >= 6). The horizontal pass multiplies
integer samples by taps, which is exact on the 2^-16 grid; the vertical pass multiplies
those by taps again and rounds back to it. The tables are built from Python's ``math``
(double precision) and fixed by a test against their committed SHA-256, so a platform
whose sine differs in the last bit cannot silently decode differently.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from coolchic_pl.fixedpoint.arithmetic import DTYPE, FRACTION_BITS, UNIT, round_half_up

FLOW_PRECISION_BITS = 6
TAP_BITS = FRACTION_BITS
# Output rows per stripe: keeps the N x N gathered neighbours of a stripe small.
_STRIPE_PIXELS = 32768


def _bicubic(distance: float) -> float:
    a, d = -0.75, abs(distance)
    if d <= 1:
        return ((a + 2) * d - (a + 3)) * d * d + 1
    if d < 2:
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return 0.0


def _sinc(distance: float, filter_size: int) -> float:
    if distance == 0:
        return 1.0
    window = math.cos(math.pi * distance / filter_size)
    return window * math.sin(math.pi * distance) / (math.pi * distance)


def _tap(fraction: float, offset: int, filter_size: int) -> float:
    distance = fraction - offset
    if filter_size == 2:
        return max(0.0, 1.0 - abs(distance))
    if filter_size == 4:
        return _bicubic(distance)
    return _sinc(distance, filter_size)


@lru_cache(maxsize=None)
def tap_table(filter_size: int) -> tuple[tuple[int, ...], ...]:
    """64 rows of N integer taps (units 2^-16) for offsets -N/2+1 .. N/2 from floor(position)."""
    positions = 2**FLOW_PRECISION_BITS
    offsets = range(-filter_size // 2 + 1, filter_size // 2 + 1)
    return tuple(tuple(math.floor(_tap(s / positions, k, filter_size) * 2**TAP_BITS + 0.5) for k in offsets)
                 for s in range(positions))


def flow_units(flow: Tensor) -> Tensor:
    """Flows in activation units -> int64 flows in 1/64 pel, rounded half up."""
    return round_half_up(flow / 2**(FRACTION_BITS - FLOW_PRECISION_BITS)).long()


def warp(samples: Tensor, flow: Tensor, filter_size: int) -> Tensor:
    """Backward warp of integer samples [C, H, W] by int64 flows [2, H, W] in 1/64 pel,
    borders replicated: a [C, H, W] prediction in activation units of samples (x 2^16)."""
    table = torch.tensor(tap_table(filter_size), dtype=DTYPE, device=samples.device) / 2**TAP_BITS
    _, height, width = samples.shape
    rows_per_stripe = max(1, _STRIPE_PIXELS // width)
    stripes = [_warp_stripe(samples, flow[:, top:top + rows_per_stripe], top, table)
               for top in range(0, height, rows_per_stripe)]
    return torch.cat(stripes, dim=1)


def _warp_stripe(samples: Tensor, flow: Tensor, top: int, table: Tensor) -> Tensor:
    channels, height, width = samples.shape
    filter_size = table.shape[1]
    rows = flow.shape[1]
    whole = torch.div(flow, 2**FLOW_PRECISION_BITS, rounding_mode="floor")
    fraction = flow - whole * 2**FLOW_PRECISION_BITS
    offsets = torch.arange(-filter_size // 2 + 1, filter_size // 2 + 1, device=flow.device).view(-1, 1, 1)
    xs = torch.arange(width, device=flow.device)
    ys = torch.arange(top, top + rows, device=flow.device).view(-1, 1)
    columns = (whole[0] + xs + offsets).clamp_(0, width - 1)  # [N, rows, W]
    row_starts = (whole[1] + ys + offsets).clamp_(0, height - 1) * width
    taps_x = table[fraction[0]].permute(2, 0, 1)  # [N, rows, W]
    taps_y = table[fraction[1]].permute(2, 0, 1)
    flat = samples.reshape(channels, height * width)
    total = torch.zeros((channels, rows, width), dtype=DTYPE, device=samples.device)
    for row in range(filter_size):
        index = (row_starts[row] + columns).reshape(-1)
        neighbours = flat.index_select(1, index).view(channels, filter_size, rows, width)
        total += (neighbours * taps_x).sum(1) * taps_y[row]
    return round_half_up(total * UNIT)
