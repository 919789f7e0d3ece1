"""The motion an inter frame's prediction starts from, in integers (1/64 pel).

A frame header may give each reference's prediction a base motion besides its integer
global translation, which the motion Cool-Chic (if the frame has one) then corrects:

* affine: six integers per reference, flow_x = a0 / 64 + (a1 x' + a2 y') / 2^16 and
  flow_y = b0 / 64 + (b1 x' + b2 y') / 2^16 pel, where x' = x - W // 2 and y' = y - H // 2;
  tens of bits for a camera's pan, zoom or rotation;
* derived: the decoded motion of an earlier frame towards one of its references, scaled by
  temporal distance (the motion of a B frame from what its references already carry, as a
  classical codec's temporal motion vector prediction), for no bits but its source.

Both are integer functions of what the decoder already has, so encoder and decoder build
the same flows on any machine.
"""

from __future__ import annotations

import numpy as np

from coolchic_pl.fixedpoint.warp import FLOW_PRECISION_BITS

# Linear affine terms are in 2^-AFFINE_SCALE_BITS flow units (1/64 pel) per pixel: 2^-16 pel per pixel.
AFFINE_SCALE_BITS = 10
AFFINE_PARAMETERS = 6
FLOW_UNITS = 2**FLOW_PRECISION_BITS


def rounded_division(numerator: np.ndarray, denominator: int) -> np.ndarray:
    """numerator / denominator rounded half up, in int64 (any denominator but 0)."""
    if denominator < 0:
        numerator, denominator = -numerator, -denominator
    return np.floor_divide(2 * numerator + denominator, 2 * denominator)


def affine_flow(parameters: tuple[int, ...], height: int, width: int) -> np.ndarray:
    """[2, H, W] int64 flow (1/64 pel) of one reference's six affine parameters."""
    a0, a1, a2, b0, b1, b2 = parameters
    xs = np.arange(width, dtype=np.int64) - width // 2
    ys = (np.arange(height, dtype=np.int64) - height // 2).reshape(-1, 1)
    scale = 2**AFFINE_SCALE_BITS
    flow_x = a0 + rounded_division(a1 * xs + a2 * ys, scale)
    flow_y = b0 + rounded_division(b1 * xs + b2 * ys, scale)
    return np.stack([flow_x, flow_y])


def derived_flow(source_flow: np.ndarray, source_display: int, source_reference: int, display: int,
                 reference: int) -> np.ndarray:
    """[2, H, W] int64 flow (1/64 pel) from the frame at ``display`` to the frame at
    ``reference``, derived from the decoded flow of the frame at ``source_display`` to the
    frame at ``source_reference`` (same units, relative to the unshifted reference).

    Motion is taken as constant in time: the source pixel p moves by
    source_flow(p) / (source_reference - source_display) per frame. The pixel q of this frame
    takes the motion of the source pixel that lands on it, found with one projection step
    (p = q - source_flow(q) x (display - source_display) / distance, whole pixels, clamped
    to the frame), scaled to (reference - display) frames.
    """
    distance = source_reference - source_display
    if distance == 0:
        raise ValueError("a derived motion needs a source flow between two different frames")
    _, height, width = source_flow.shape
    xs = np.arange(width, dtype=np.int64)
    ys = np.arange(height, dtype=np.int64).reshape(-1, 1)
    moved = rounded_division(source_flow * (display - source_display), distance * FLOW_UNITS)
    columns = np.clip(xs - moved[0], 0, width - 1)
    rows = np.clip(ys - moved[1], 0, height - 1)
    projected = source_flow[:, rows, columns]
    return rounded_division(projected * (reference - display), distance)
