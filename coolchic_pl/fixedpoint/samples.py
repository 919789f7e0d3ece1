"""Decoded samples of an image or inter frame, in integers, and the planes they make.

Samples are computed in sample units (0 .. 2^bitdepth - 1) rather than in [0, 1], where
1 / (2^bitdepth - 1) has no exact binary value: the last step of every frame multiplies
activation units by the integer maximum, divides by 2^16 and rounds half up. Predictions
are in activation units of samples (sample x 2^16).
"""

from __future__ import annotations

import torch
from torch import Tensor

from coolchic_pl.fixedpoint.arithmetic import DTYPE, UNIT, round_half_up
from coolchic_pl.fixedpoint.image import check_bounds, raw_output
from coolchic_pl.fixedpoint.warp import FLOW_PRECISION_BITS, flow_units, warp
from coolchic_pl.io import ColorSpace
from coolchic_pl.model.coolchic import CoolChic
from coolchic_pl.model.interframe import InterCoolChic
from coolchic_pl.training.loss import output_planes


def _blend_weight(raw: Tensor) -> Tensor:
    """alpha and beta as ``interframe.blend_weight``, in activation units (0 .. 2^16)."""
    return torch.clamp(raw + UNIT / 2, 0.0, UNIT)


def _image_samples(model: CoolChic, max_value: int) -> Tensor:
    """low + floor(1/2 + output x (high - low) / 2^16), clamped: [0, 1] maps onto the output
    range [low, high] the file sends, or onto [0, max_value] without one."""
    low, span = torch.zeros(()), torch.tensor(float(max_value))
    if model.synthesis.has_output_range:
        low = torch.round(model.synthesis.output_offset * max_value)
        span = torch.round(model.synthesis.output_scale * max_value)
    output = raw_output(model)
    low, span = low.to(output), span.to(output)
    return (low + round_half_up(output * span / UNIT)).clamp_(0, max_value)


def _inter_samples(model: InterCoolChic, max_value: int) -> tuple[Tensor, Tensor]:
    """alpha * prediction + residue, and the flows [references, 2, H, W] (int64, 1/64 pel,
    relative to the shifted references) that made the prediction: the base flows plus the
    motion Cool-Chic's. The prediction warps the references' integer samples."""
    flows = model.base_flow_units.clone()
    references = [torch.round(getattr(model, f"reference_{i}").to(DTYPE)[0] * max_value)
                  for i in range(model.n_references)]
    beta = torch.full_like(references[0][:1], UNIT / 2)
    if model.motion is not None:
        motion = raw_output(model.motion)
        flows += flow_units(motion[:2 * model.n_references]).view_as(flows)
        if model.n_references == 2:
            beta = _blend_weight(motion[4:5])
    size = model.frame_parameters.warp_filter_size
    prediction = warp(references[0], flows[0], size)
    if model.n_references == 2:
        blend = beta * prediction + (UNIT - beta) * warp(references[1], flows[1], size)
        prediction = round_half_up(blend / UNIT)
    if model.residue is None:
        return round_half_up(prediction / UNIT).clamp_(0, max_value), flows
    residue = raw_output(model.residue)
    scaled = round_half_up(_blend_weight(residue[3:4]) * prediction / UNIT)
    return round_half_up((scaled + residue[:3] * max_value) / UNIT).clamp_(0, max_value), flows


@torch.no_grad()
def decoded_samples(decoder: CoolChic | InterCoolChic, bitdepth: int) -> Tensor:
    """[3, H, W] integer samples (float64) of the frame the decoder's latents and quantised
    networks make, identical on every machine."""
    max_value = 2**bitdepth - 1
    if isinstance(decoder, InterCoolChic):
        return _inter_samples(decoder, max_value)[0]
    return _image_samples(decoder, max_value)


@torch.no_grad()
def decoded_inter_frame(decoder: InterCoolChic, color_space: ColorSpace,
                        bitdepth: int) -> tuple[tuple[Tensor, ...], Tensor]:
    """The planes of an inter frame (as :func:`decoded_planes`) and its decoded motion:
    [references, 2, H, W] int64 flows in 1/64 pel relative to the unshifted references
    (global translation included), which later frames may derive their motion from."""
    samples, flows = _inter_samples(decoder, 2**bitdepth - 1)
    translations = torch.tensor(decoder.frame_parameters.translations, dtype=torch.int64, device=flows.device)
    flows = flows + translations.view(-1, 2, 1, 1) * 2**FLOW_PRECISION_BITS
    return _planes(samples, color_space, bitdepth), flows


def check_decoder_bounds(decoder: CoolChic | InterCoolChic) -> None:
    """Raise ``ArithmeticBoundError`` if a network could leave the exact range."""
    for coolchic in decoder.coolchics.values() if isinstance(decoder, InterCoolChic) else (decoder,):
        check_bounds(coolchic)


def decoded_planes(decoder: CoolChic | InterCoolChic, color_space: ColorSpace, bitdepth: int,
                   integer: bool = True) -> tuple[Tensor, ...]:
    """The frame's float32 planes in [0, 1] that a decoder makes: from its integer samples
    (the current formats), or in float32 as files of image and video versions 1 and 2 were
    decoded (their samples may differ across machines)."""
    if integer:
        return _planes(decoded_samples(decoder, bitdepth), color_space, bitdepth)
    with torch.no_grad():
        return output_planes(decoder().image, color_space, bitdepth, rounded=True)


def _planes(samples: Tensor, color_space: ColorSpace, bitdepth: int) -> tuple[Tensor, ...]:
    return output_planes((samples / (2**bitdepth - 1)).float().unsqueeze(0), color_space, bitdepth, rounded=False)
