"""Motion compensation in integers: flows in 1/64 pel, filter taps in 2^-16 units.

A tap table row holds the N taps for one of the 64 fractional positions, each rounded half
up to a multiple of 2^-16: bilinear (N = 2), bicubic with a = -0.75 (N = 4) and the
windowed sinc of :mod:`coolchic_pl.model.warp` (N >= 6). The horizontal pass multiplies
integer samples by taps, which is exact on the 2^-16 grid; the vertical pass multiplies
those by taps again and rounds back to it (in int64: every product and sum is exact). The
tables are built from Python's ``math`` (double precision) and fixed by a test against their committed SHA-256, so a platform
whose sine differs in the last bit cannot silently decode differently.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from coolchic_pl import _native
from coolchic_pl.fixedpoint.arithmetic import FRACTION_BITS

FLOW_PRECISION_BITS = 6
TAP_BITS = FRACTION_BITS


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


@lru_cache(maxsize=None)
def tap_array(filter_size: int) -> np.ndarray:
    """:func:`tap_table` as the [64, N] int64 array the compiled warp reads."""
    return np.ascontiguousarray(tap_table(filter_size), dtype=np.int64)


def warp(samples: np.ndarray, base_flow: np.ndarray, filter_size: int,
         motion: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Backward warp of integer samples [C, H, W] by int64 flows [2, H, W] in 1/64 pel, borders
    replicated: a [C, H, W] prediction in activation units of samples (x 2^16), computed in
    int64 by :mod:`coolchic_pl._native`, and the flows used. The flows are ``base_flow`` plus,
    with a motion output [2, H, W] in activation units, that output rounded half up to 1/64 pel
    (the 2^10 activation units a 1/64 pel spans)."""
    channels, height, width = samples.shape
    out = np.empty((channels, height, width))
    flows = np.empty((2, height, width), dtype=np.int64)
    _native.warp(np.ascontiguousarray(samples, dtype=np.float64), channels, height, width,
                 np.ascontiguousarray(base_flow, dtype=np.int64),
                 None if motion is None else np.ascontiguousarray(motion, dtype=np.float64), tap_array(filter_size),
                 filter_size, out, flows)
    return out, flows
