"""CoolChic: latent pyramid + ARM + upsampling + synthesis for one frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from coolchic_pl.model.architecture import CoolChicArchitecture
from coolchic_pl.model.arm import Arm, clamped_log_scale, context_index, gather_contexts
from coolchic_pl.model.laplace import laplace_rate_bits
from coolchic_pl.model.latents import ENCODER_GAIN, LatentPyramid
from coolchic_pl.model.quantizer import NoiseType, QuantizerType
from coolchic_pl.model.synthesis import Synthesis
from coolchic_pl.model.upsampling import Upsampling

ModuleName = Literal["all", "latent", "arm", "upsampling", "synthesis"]
MODULE_NAMES: tuple[ModuleName, ...] = ("all", "latent", "arm", "upsampling", "synthesis")


@dataclass
class CoolChicOutput:
    """Raw synthesis output [1, n_outputs, H, W] (not clamped) and the latent rate.

    ``rate_bits`` holds -log2 P of every latent of every non-empty grid, grid 0 first.
    """

    image: Tensor
    rate_bits: Tensor
    latents: Tensor


class CoolChic(nn.Module):
    def __init__(
        self,
        image_size: tuple[int, int],
        architecture: CoolChicArchitecture = CoolChicArchitecture(),
        n_outputs: int = 3,
        encoder_gain: float = ENCODER_GAIN,
    ):
        super().__init__()
        self.image_size = tuple(image_size)
        self.architecture = architecture
        self.latent = LatentPyramid(self.image_size, architecture.n_ft_per_res, encoder_gain)
        shapes = [(c, h, w) for c, (h, w) in zip(self.latent.n_ft_per_res, self.latent.sizes)]
        self.arm = Arm(architecture.dim_arm, architecture.n_hidden_layers_arm)
        self.upsampling = Upsampling(shapes, architecture.ups_k_size, architecture.ups_preconcat_k_size)
        self.synthesis = Synthesis(sum(architecture.n_ft_per_res), architecture.layers_synthesis, n_outputs)
        self.register_buffer("context_index", context_index(shapes, architecture.dim_arm), persistent=False)

    def module_parameters(self, names: Iterable[ModuleName]) -> list[nn.Parameter]:
        """Parameters of the named sub-modules ("all" for every one), without duplicates.

        This is how a training phase selects what it optimises (e.g. latents only).
        """
        selected: dict[int, nn.Parameter] = {}
        for name in names:
            if name not in MODULE_NAMES:
                raise ValueError(f"unknown module '{name}', expected one of {MODULE_NAMES}")
            params = self.parameters() if name == "all" else getattr(self, name).parameters()
            selected.update((id(p), p) for p in params)
        return list(selected.values())

    def forward(
        self,
        quantizer_type: QuantizerType = "softround",
        temperature: Tensor | float = 0.3,
        noise_type: NoiseType = "kumaraswamy",
        noise_parameter: Tensor | float = 1.0,
    ) -> CoolChicOutput:
        """Decode the frame from its latents with a training-time quantiser.

        In eval mode the latents are hard-rounded without noise whatever the arguments.
        """
        latents = self.latent(quantizer_type, temperature, noise_type, noise_parameter)
        mu, raw_log_scale = self.arm(gather_contexts(latents, self.context_index))
        rate_bits = laplace_rate_bits(latents, mu, clamped_log_scale(raw_log_scale))
        dense = self.upsampling(self.latent.unflatten(latents))
        image = self.synthesis(dense)
        if image.shape[-2:] != self.image_size:
            image = F.interpolate(image, size=self.image_size, mode="nearest")
        return CoolChicOutput(image=image, rate_bits=rate_bits, latents=latents)

    def rate_per_grid(self, rate_bits: Tensor) -> list[Tensor]:
        """Total bits of each grid (0 for empty grids), finest first."""
        return [part.sum() for part in rate_bits.split(self.latent.numels)]

    def mac_per_pixel(self) -> float:
        """Multiply-accumulates per image pixel of one decoding.

        Counts what the reference counts with fvcore on its eval-mode decoder: matrix
        products and convolutions (ARM, separable upsampling filters, synthesis), not
        element-wise work, so the figures compare with its documented 330 to 1430.
        """
        height, width = self.image_size
        synthesis_height, synthesis_width = self.upsampling.output_size
        macs = (
            self.arm.macs_per_latent() * self.latent.n_latents
            + self.upsampling.macs()
            + self.synthesis.macs_per_pixel() * synthesis_height * synthesis_width
        )
        return macs / (height * width)
