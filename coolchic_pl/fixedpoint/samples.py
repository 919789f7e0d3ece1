"""Decoded samples of an image or inter frame, in integers, and the planes they make.

Samples are computed in sample units (0 .. 2^bitdepth - 1) rather than in [0, 1], where
1 / (2^bitdepth - 1) has no exact binary value: the last step of every frame multiplies
activation units by the integer maximum, divides by 2^16 and rounds half up. Predictions
are in activation units of samples (sample x 2^16).
"""

from __future__ import annotations

import numpy as np

from coolchic_pl import _native
from coolchic_pl.fixedpoint.coolchic import IntegerCoolChic, IntegerInterFrame
from coolchic_pl.fixedpoint.image import check_bounds, raw_output
from coolchic_pl.fixedpoint.warp import FLOW_PRECISION_BITS, warp
from coolchic_pl.io.frame import ColorSpace


def image_samples(coolchic: IntegerCoolChic, max_value: int) -> np.ndarray:
    """low + floor(1/2 + output x (high - low) / 2^16), clamped to [0, max_value] (compiled):
    [0, 1] maps onto the output range [low, high] the file sends, or onto [0, max_value]
    without one."""
    output = np.ascontiguousarray(raw_output(coolchic))
    channels = output.shape[0]
    low, span = np.zeros(channels), np.full(channels, float(max_value))
    if coolchic.output_range is not None:
        low = coolchic.output_range[:, 0].astype(np.float64)
        span = (coolchic.output_range[:, 1] - coolchic.output_range[:, 0]).astype(np.float64)
    samples = np.empty_like(output)
    _native.image_samples(output, channels, output[0].size, low, span, float(max_value), samples)
    return samples


def inter_samples(frame: IntegerInterFrame, max_value: int) -> tuple[np.ndarray, np.ndarray]:
    """alpha * prediction + residue, and the flows [references, 2, H, W] (int64, 1/64 pel,
    relative to the shifted references) that made the prediction: the base flows plus the
    motion Cool-Chic's. The prediction warps the references' integer samples; with two, their
    blend by beta (one half without a motion Cool-Chic), alpha and beta as
    ``interframe.blend_weight`` in activation units (:func:`coolchic_pl._native.blend`)."""
    n_references = len(frame.references)
    motion = None if frame.motion is None else raw_output(frame.motion)
    predictions, flows = zip(*(warp(reference, frame.base_flows[r], frame.warp_filter_size,
                                    None if motion is None else motion[2 * r:2 * r + 2])
                               for r, reference in enumerate(frame.references)))
    beta = motion[4] if motion is not None and n_references == 2 else None
    residue = None if frame.residue is None else raw_output(frame.residue)
    _, height, width = predictions[0].shape
    samples = np.empty((3, height, width))
    _native.blend(predictions[0], predictions[1] if n_references == 2 else None,
                  None if beta is None else np.ascontiguousarray(beta),
                  None if residue is None else np.ascontiguousarray(residue), height * width, float(max_value), samples)
    return samples, np.stack(flows)


def frame_samples(frame: IntegerCoolChic | IntegerInterFrame, bitdepth: int) -> np.ndarray:
    """[3, H, W] integer samples (float64) of the frame, identical on every machine."""
    max_value = 2**bitdepth - 1
    if isinstance(frame, IntegerInterFrame):
        return inter_samples(frame, max_value)[0]
    return image_samples(frame, max_value)


def decoded_motion(frame: IntegerInterFrame, flows: np.ndarray) -> np.ndarray:
    """The flows of :func:`inter_samples` relative to the unshifted references (global
    translation included): the motion later frames may derive theirs from."""
    translations = np.asarray(frame.translations, dtype=np.int64).reshape(-1, 2, 1, 1)
    return flows + translations * 2**FLOW_PRECISION_BITS


def check_frame_bounds(frame: IntegerCoolChic | IntegerInterFrame) -> None:
    """Raise ``ArithmeticBoundError`` if a network could leave the exact range."""
    for coolchic in frame.coolchics() if isinstance(frame, IntegerInterFrame) else (frame,):
        check_bounds(coolchic)


def sample_planes(samples: np.ndarray, color_space: ColorSpace) -> tuple[np.ndarray, ...]:
    """[3, H, W] samples -> the frame's planes: one [3, H, W], or for 4:2:0 the luma [1, H, W]
    and the top-left chroma sample of each 2x2 block [1, ceil(H/2), ceil(W/2)]."""
    if color_space == "yuv420":
        return samples[:1], samples[1:2, ::2, ::2], samples[2:3, ::2, ::2]
    return (samples,)
