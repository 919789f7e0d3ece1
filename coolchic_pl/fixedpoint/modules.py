"""The integer decoder seen from the encoder's torch modules, and back.

The encoder's reconstruction converts its trained (quantised) modules into the arrays of
:mod:`coolchic_pl.fixedpoint.coolchic` and runs the decoder's functions on them: one
implementation of the decoder, two callers. Files of versions 1 and 2, decoded in float32
as they were written, and the Python API's ``decoder()`` build the modules from a decoded
file (:func:`coolchic_module`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from coolchic_pl.fixedpoint.coolchic import IntegerCoolChic, IntegerInterFrame
from coolchic_pl.fixedpoint.samples import frame_samples, sample_planes
from coolchic_pl.io.frame import ColorSpace, FrameData, SampleFrame
from coolchic_pl.model.coolchic import CoolChic
from coolchic_pl.model.interframe import InterCoolChic
from coolchic_pl.model.interparams import InterFrameParameters
from coolchic_pl.model.layout import NETWORK_NAMES
from coolchic_pl.training.loss import output_planes


def integer_frame(decoder: CoolChic | InterCoolChic, bitdepth: int) -> IntegerCoolChic | IntegerInterFrame:
    """The arrays the integer decoder computes ``decoder``'s frame from."""
    if isinstance(decoder, InterCoolChic):
        return IntegerInterFrame.from_module(decoder, bitdepth)
    return IntegerCoolChic.from_module(decoder, bitdepth)


@torch.no_grad()
def decoded_samples(decoder: CoolChic | InterCoolChic, bitdepth: int) -> Tensor:
    """[3, H, W] integer samples (float64) of the frame the decoder's latents and quantised
    networks make, identical on every machine, on the decoder's device."""
    device = next(decoder.buffers()).device  # an inter frame may have no Cool-Chic, hence no parameter
    return torch.from_numpy(frame_samples(integer_frame(decoder, bitdepth), bitdepth)).to(device)


def decoded_planes(decoder: CoolChic | InterCoolChic, color_space: ColorSpace, bitdepth: int,
                   integer: bool = True) -> tuple[Tensor, ...]:
    """The frame's float32 planes in [0, 1] that a decoder makes: from its integer samples
    (the current formats), or in float32 as files of image and video versions 1 and 2 were
    decoded (their samples may differ across machines)."""
    if not integer:
        with torch.no_grad():
            return output_planes(decoder().image, color_space, bitdepth, rounded=True)
    samples = decoded_samples(decoder, bitdepth)
    frame = SampleFrame.of(sample_planes(samples.cpu().numpy(), color_space), bitdepth, color_space).to_frame_data()
    return tuple(plane.to(samples.device) for plane in frame.planes)


def coolchic_module(coolchic: IntegerCoolChic, bitdepth: int) -> CoolChic:
    """The CoolChic, in evaluation mode, whose quantised networks and latents ``coolchic``
    holds (its output range on the sample grid of ``bitdepth``)."""
    model = CoolChic(coolchic.image_size, coolchic.architecture, n_outputs=coolchic.n_outputs)
    model.eval()
    with torch.no_grad():
        for name in NETWORK_NAMES:
            for key, parameter in getattr(model, name).named_parameters():
                parameter.copy_(torch.from_numpy(coolchic.networks[name][key]))
        latents = torch.from_numpy(coolchic.latents.astype(np.float32)) / model.latent.encoder_gain
        for grid, values in zip(model.latent.grids, model.latent.unflatten(latents)):
            grid.copy_(values)
        if coolchic.output_range is not None:
            bounds = torch.from_numpy(coolchic.output_range.astype(np.float32)) / (2**bitdepth - 1)
            model.synthesis.set_output_range(bounds[:, 0], bounds[:, 1])
    return model


def float_frame(coolchics: dict[str, IntegerCoolChic], references: list[SampleFrame],
                parameters: InterFrameParameters | None, color_space: ColorSpace, bitdepth: int) -> SampleFrame:
    """A frame of video versions 1 and 2, decoded in float32 as it was written: an I frame's
    residue Cool-Chic, or an inter frame's Cool-Chics on its references. (Those versions'
    inter frames left the Cool-Chics' output ranges unset: only the networks are loaded.)"""
    if parameters is None:
        decoder = coolchic_module(coolchics["residue"], bitdepth)
    else:
        size = references[0].height, references[0].width
        decoder = InterCoolChic(size, [reference_tensor(r) for r in references], parameters,
                                *(None if role not in coolchics else coolchics[role].architecture
                                  for role in ("residue", "motion")))
        for role, coolchic in coolchics.items():
            getattr(decoder, role).load_state_dict(coolchic_module(coolchic, bitdepth).state_dict())
        decoder.eval()
    planes = decoded_planes(decoder, color_space, bitdepth, integer=False)
    return FrameData(planes, bitdepth, color_space).to_samples()


def reference_tensor(frame: SampleFrame) -> Tensor:
    """[1, 3, H, W] in [0, 1], 4:2:0 chroma repeated 2x2: a decoded frame as the encoder's
    inter frames take their references."""
    return torch.from_numpy((frame.to_444() / frame.max_value).astype(np.float32)).unsqueeze(0)
