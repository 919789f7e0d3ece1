"""The decoder of a P or B frame: a residue Cool-Chic and a motion Cool-Chic over the
decoded reference frames.

decoded = alpha * prediction + residue, where the prediction warps the references with
the motion Cool-Chic's block-constant flows (blended by beta for a B frame) and the
residue Cool-Chic outputs the residue and alpha. It exposes the interface of
:class:`~coolchic_pl.model.coolchic.CoolChic` that training, quantisation and the
bitstream use, so an inter frame trains through the same module, runner and callbacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import Tensor, nn

from coolchic_pl.model.architecture import CoolChicArchitecture
from coolchic_pl.model.coolchic import CoolChic, CoolChicOutput, select_parameters
from coolchic_pl.model.evalcache import VersionedCache
from coolchic_pl.model.quantizer import NoiseType, QuantizerType
from coolchic_pl.model.warp import quantize_flow, shift, warp, warp_macs_per_pixel

RESIDUE_OUTPUTS = 4  # three colour residues and alpha
MOTION_OUTPUTS = {1: 2, 2: 5}  # per reference count: flow (P); two flows and beta (B)
# Flows are rounded to this fraction of a pixel at evaluation, hence in the decoder.
FLOW_ACCURACY = 64


@dataclass(frozen=True)
class InterFrameParameters:
    """What an inter frame's decoder needs besides its two Cool-Chics, all sent in the
    bitstream: the integer global translation (dx, dy) of each reference and the warp
    filter length."""

    translations: tuple[tuple[int, int], ...]
    warp_filter_size: int = 8


def blend_weight(raw: Tensor) -> Tensor:
    """alpha and beta: a raw output of 0 means 0.5, clamped to [0, 1]."""
    return torch.clamp(raw + 0.5, 0.0, 1.0)


class InterCoolChic(nn.Module):
    def __init__(self, image_size: tuple[int, int], references: list[Tensor], parameters: InterFrameParameters,
                 residue: CoolChicArchitecture, motion: CoolChicArchitecture):
        """``references`` are the decoded reference frames in 4:4:4, [1, 3, H, W], past
        first; they are shifted by their global translation once, here."""
        super().__init__()
        if len(references) not in MOTION_OUTPUTS or len(parameters.translations) != len(references):
            raise ValueError(f"an inter frame needs one or two references and as many translations, got "
                             f"{len(references)} and {len(parameters.translations)}")
        self.image_size = tuple(image_size)
        self.frame_parameters = parameters
        self.residue = CoolChic(image_size, residue, n_outputs=RESIDUE_OUTPUTS)
        self.motion = CoolChic(image_size, motion, n_outputs=MOTION_OUTPUTS[len(references)])
        self.n_references = len(references)
        self._eval_prediction: VersionedCache[Tensor] = VersionedCache()
        for index, (reference, (dx, dy)) in enumerate(zip(references, parameters.translations)):
            self.register_buffer(f"reference_{index}", shift(reference, dx, dy), persistent=False)

    @property
    def coolchics(self) -> dict[str, CoolChic]:
        return {"residue": self.residue, "motion": self.motion}

    def module_parameters(self, names: Iterable[str]) -> list[nn.Parameter]:
        return select_parameters(self.coolchics, names)

    def quantizable_modules(self) -> dict[str, nn.Module]:
        """Residue then motion, as the reference quantises them."""
        return {f"{key}.{name}": module for key, coolchic in self.coolchics.items()
                for name, module in coolchic.quantizable_modules().items()}

    def prediction(self, flows: Tensor) -> Tensor:
        """Motion-compensated prediction from the motion Cool-Chic's output."""
        if not self.training:
            flows = quantize_flow(flows, FLOW_ACCURACY)
        size = self.frame_parameters.warp_filter_size
        predicted = warp(self.reference_0, flows[:, 0:2], size)
        if self.n_references == 2:
            beta = blend_weight(flows[:, 4:5])
            predicted = beta * predicted + (1.0 - beta) * warp(self.reference_1, flows[:, 2:4], size)
        return predicted

    def forward(
        self,
        quantizer_type: QuantizerType = "softround",
        temperature: Tensor | float = 0.3,
        noise_type: NoiseType = "kumaraswamy",
        noise_parameter: Tensor | float = 1.0,
    ) -> CoolChicOutput:
        residue = self.residue(quantizer_type, temperature, noise_type, noise_parameter)
        motion = self.motion(quantizer_type, temperature, noise_type, noise_parameter)
        alpha = blend_weight(residue.image[:, 3:4])
        if self.training:
            predicted = self.prediction(motion.image)
        else:
            predicted = self._eval_prediction.get([motion.image], lambda: self.prediction(motion.image))
        image = alpha * predicted + residue.image[:, :3]
        return CoolChicOutput(image=image, rate_bits=torch.cat([residue.rate_bits, motion.rate_bits]),
                              latents=torch.cat([residue.latents, motion.latents]))

    def latent_bits(self, rate_bits: Tensor) -> dict[str, Tensor]:
        """Total latent bits of each Cool-Chic, from the concatenated rates of forward()."""
        residue, motion = rate_bits.split([self.residue.latent.n_latents, self.motion.latent.n_latents])
        return {"residue": residue.sum(), "motion": motion.sum()}

    def rate_per_grid(self, rate_bits: Tensor) -> list[Tensor]:
        """Bits of each grid, residue grids first, then motion grids."""
        residue, motion = rate_bits.split([self.residue.latent.n_latents, self.motion.latent.n_latents])
        return self.residue.rate_per_grid(residue) + self.motion.rate_per_grid(motion)

    def mac_per_pixel(self) -> float:
        """Both Cool-Chics plus the warps (three colour channels per reference)."""
        first_grid = next(i for i, c in enumerate(self.motion.architecture.n_ft_per_res) if c)
        warps = 3 * self.n_references * warp_macs_per_pixel(self.frame_parameters.warp_filter_size, 2**first_grid)
        return self.residue.mac_per_pixel() + self.motion.mac_per_pixel() + warps
