"""The decoder of a P or B frame: the prediction from the decoded reference frames, a motion
Cool-Chic correcting its motion and a residue Cool-Chic correcting the prediction, both optional.

Each reference is shifted by its integer global translation, then warped by a flow: the
base motion of the frame's motion model (none, affine or derived from an earlier frame's
motion, :mod:`coolchic_pl.fixedpoint.motionmodel`) plus the block-constant flow of the motion
Cool-Chic when the frame has one. A B frame blends its two predictions with beta (the
motion Cool-Chic's fifth output, else an even blend). decoded = alpha x prediction + residue,
the residue Cool-Chic giving the residue and alpha; without one, decoded = prediction. It
exposes the interface of :class:`~coolchic_pl.model.coolchic.CoolChic` that training,
quantisation and the bitstream use, so an inter frame trains through the same module,
runner and callbacks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from coolchic_pl.model.architecture import CoolChicArchitecture
from coolchic_pl.model.coolchic import CoolChic, CoolChicOutput, select_parameters
from coolchic_pl.model.evalcache import VersionedCache
from coolchic_pl.model.interparams import FLOW_ACCURACY, MOTION_OUTPUTS, RESIDUE_OUTPUTS, InterFrameParameters
from coolchic_pl.model.quantizer import NoiseType, QuantizerType
from coolchic_pl.model.warp import quantize_flow, shift, warp, warp_macs_per_pixel

if TYPE_CHECKING:
    from coolchic_pl.nnquant.quantize import NetworkPrediction


def blend_weight(raw: Tensor) -> Tensor:
    """alpha and beta: a raw output of 0 means 0.5, clamped to [0, 1]."""
    return torch.clamp(raw + 0.5, 0.0, 1.0)


class InterCoolChic(nn.Module):
    def __init__(self, image_size: tuple[int, int], references: list[Tensor], parameters: InterFrameParameters,
                 residue: CoolChicArchitecture | None, motion: CoolChicArchitecture | None,
                 base_flows: Tensor | np.ndarray | None = None):
        """``references`` are the decoded reference frames in 4:4:4, [1, 3, H, W], past
        first; they are shifted by their global translation once, here. ``residue`` and
        ``motion`` are the architectures of the frame's Cool-Chics, None for one it does not
        have. ``base_flows`` [references, 2, H, W] int64 (1/64 pel, relative to the shifted
        references) is the motion model's flow (None: zero)."""
        super().__init__()
        if len(references) not in MOTION_OUTPUTS or len(parameters.translations) != len(references):
            raise ValueError(f"an inter frame needs one or two references and as many translations, got "
                             f"{len(references)} and {len(parameters.translations)}")
        self.image_size = tuple(image_size)
        self.frame_parameters = parameters
        self.n_references = len(references)
        self.residue = None if residue is None else CoolChic(image_size, residue, n_outputs=RESIDUE_OUTPUTS)
        self.motion = None if motion is None else CoolChic(image_size, motion,
                                                           n_outputs=MOTION_OUTPUTS[len(references)])
        self._eval_prediction: VersionedCache[Tensor] = VersionedCache()
        for index, (reference, (dx, dy)) in enumerate(zip(references, parameters.translations)):
            self.register_buffer(f"reference_{index}", shift(reference, dx, dy), persistent=False)
        height, width = self.image_size
        if base_flows is None:
            base_flows = torch.zeros((self.n_references, 2, height, width), dtype=torch.int64)
        base_flows = torch.as_tensor(base_flows, dtype=torch.int64)
        if tuple(base_flows.shape) != (self.n_references, 2, height, width):
            raise ValueError(f"base flows must be [{self.n_references}, 2, {height}, {width}], got "
                             f"{tuple(base_flows.shape)}")
        self.register_buffer("base_flow_units", base_flows.to(torch.int64), persistent=False)
        self.register_buffer("base_flow", base_flows.float() / FLOW_ACCURACY, persistent=False)

    @property
    def coolchics(self) -> dict[str, CoolChic]:
        """The frame's Cool-Chics, residue first (their order in the bitstream)."""
        return {name: coolchic for name, coolchic in (("residue", self.residue), ("motion", self.motion))
                if coolchic is not None}

    def module_parameters(self, names: Iterable[str]) -> list[nn.Parameter]:
        return select_parameters(self.coolchics, names)

    def quantizable_modules(self) -> dict[str, nn.Module]:
        """Residue then motion, as the reference quantises them."""
        return {f"{key}.{name}": module for key, coolchic in self.coolchics.items()
                for name, module in coolchic.quantizable_modules().items()}

    def network_predictions(self) -> dict[str, NetworkPrediction]:
        return {f"{key}.{name}": prediction for key, coolchic in self.coolchics.items()
                for name, prediction in coolchic.network_predictions().items()}

    def difference_rate_terms(self) -> list[tuple[Tensor, Tensor, float]]:
        return [term for coolchic in self.coolchics.values() for term in coolchic.difference_rate_terms()]

    def prediction(self, flows: Tensor | None) -> Tensor:
        """Motion-compensated prediction from the base flows and the motion Cool-Chic's
        output (None without one)."""
        if flows is not None and not self.training:
            flows = quantize_flow(flows, FLOW_ACCURACY)
        size = self.frame_parameters.warp_filter_size

        def flow(index: int) -> Tensor:
            base = self.base_flow[index:index + 1]
            return base if flows is None else base + flows[:, 2 * index:2 * index + 2]

        predicted = warp(self.reference_0, flow(0), size)
        if self.n_references == 2:
            beta = 0.5 if flows is None else blend_weight(flows[:, 4:5])
            predicted = beta * predicted + (1.0 - beta) * warp(self.reference_1, flow(1), size)
        return predicted

    def forward(
        self,
        quantizer_type: QuantizerType = "softround",
        temperature: Tensor | float = 0.3,
        noise_type: NoiseType = "kumaraswamy",
        noise_parameter: Tensor | float = 1.0,
    ) -> CoolChicOutput:
        outputs = {name: coolchic(quantizer_type, temperature, noise_type, noise_parameter)
                   for name, coolchic in self.coolchics.items()}
        flows = outputs["motion"].image if "motion" in outputs else None
        if self.training:
            predicted = self.prediction(flows)
        else:
            predicted = self._eval_prediction.get([] if flows is None else [flows], lambda: self.prediction(flows))
        image = predicted
        if "residue" in outputs:
            residue = outputs["residue"].image
            image = blend_weight(residue[:, 3:4]) * predicted + residue[:, :3]
        empty = predicted.new_zeros(0)
        return CoolChicOutput(image=image, rate_bits=torch.cat([empty, *(o.rate_bits for o in outputs.values())]),
                              latents=torch.cat([empty, *(o.latents for o in outputs.values())]))

    def _split(self, rate_bits: Tensor) -> dict[str, Tensor]:
        coolchics = self.coolchics
        return dict(zip(coolchics, rate_bits.split([c.latent.n_latents for c in coolchics.values()])))

    def latent_bits(self, rate_bits: Tensor) -> dict[str, Tensor]:
        """Total latent bits of each Cool-Chic, from the concatenated rates of forward()."""
        return {name: bits.sum() for name, bits in self._split(rate_bits).items()}

    def rate_per_grid(self, rate_bits: Tensor) -> list[Tensor]:
        """Bits of each grid, residue grids first, then motion grids."""
        return [grid for name, bits in self._split(rate_bits).items()
                for grid in self.coolchics[name].rate_per_grid(bits)]

    def mac_per_pixel(self) -> float:
        """The Cool-Chics plus the warps (three colour channels per reference); a flow
        constant on blocks (the motion Cool-Chic's alone) is filtered block by block."""
        block = 1
        if self.motion is not None and self.frame_parameters.motion_model.kind == "translation":
            block = 2**next(i for i, c in enumerate(self.motion.architecture.n_ft_per_res) if c)
        warps = 3 * self.n_references * warp_macs_per_pixel(self.frame_parameters.warp_filter_size, block)
        return sum(coolchic.mac_per_pixel() for coolchic in self.coolchics.values()) + warps
