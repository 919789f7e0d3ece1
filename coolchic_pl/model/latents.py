"""The latent pyramid: one learnable grid per resolution, finest first."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from coolchic_pl.model.layout import LatentLayout
from coolchic_pl.model.quantizer import NoiseType, QuantizerType, quantize

ENCODER_GAIN = 16.0


def encoder_gain_for(lmbda: float) -> float:
    """Cool-Chic 5's gain of an intra frame: larger at high rates, where the latents need
    finer steps relative to Adam's (24 below lambda 2e-4, 20 below 5e-4, else 16)."""
    return 24.0 if lmbda < 2e-4 else 20.0 if lmbda < 5e-4 else ENCODER_GAIN


class LatentPyramid(nn.Module):
    """Latent grids y_i of shape [1, C_i, ceil(H/2^i), ceil(W/2^i)] with C_i in {0, 1}, then
    the hyper-latent grids (one per resolution r with ``hyper_per_res[r]``), which only the
    entropy model reads.

    The stored parameters are the latents divided by the encoder gain: multiplying by
    the gain before quantisation makes Adam's step size on the latents 16 times larger
    without changing the optimiser's learning rate for the networks.
    """

    def __init__(self, image_size: tuple[int, int], n_ft_per_res: Sequence[int], encoder_gain: float = ENCODER_GAIN,
                 hyper_per_res: Sequence[int] = ()):
        super().__init__()
        self.layout = LatentLayout.of(image_size, n_ft_per_res, hyper_per_res)
        self.n_ft_per_res = tuple(int(c) for c in n_ft_per_res)
        self.encoder_gain = encoder_gain
        self.n_synthesis_grids = self.layout.n_synthesis_grids
        self.channels, self.resolutions = list(self.layout.channels), list(self.layout.resolutions)
        self.sizes = list(self.layout.sizes)
        self.grids = nn.ParameterList(
            nn.Parameter(torch.zeros(1, c, h, w)) for c, (h, w) in zip(self.channels, self.sizes)
        )
        self.numels = self.layout.numels

    @property
    def n_latents(self) -> int:
        return sum(self.numels)

    def flat(self) -> Tensor:
        """All gained (unquantised) latents as one vector, grid 0 first, raster order."""
        return torch.cat([g.reshape(-1) for g in self.grids]) * self.encoder_gain

    def coded_grids(self) -> list[int]:
        return self.layout.coded_grids()

    def decoding_order(self) -> list[int]:
        return self.layout.decoding_order()

    def unflatten(self, flat: Tensor) -> list[Tensor]:
        """Inverse of :meth:`flat` for any per-latent vector (quantised latents, rates)."""
        return [part.view(g.shape) for part, g in zip(flat.split(self.numels), self.grids)]

    def forward(
        self,
        quantizer_type: QuantizerType,
        temperature: Tensor | float,
        noise_type: NoiseType,
        noise_parameter: Tensor | float,
    ) -> Tensor:
        """Quantised latents as one flat vector; evaluation mode always hard-rounds.

        Quantising the concatenated vector in one call draws all the noise at once,
        which is both what the reference does and far cheaper than one call per grid.
        """
        gained = self.flat()
        if not self.training:
            return torch.round(gained)
        return quantize(gained, quantizer_type, temperature, noise_type, noise_parameter)
