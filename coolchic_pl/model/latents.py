"""The latent pyramid: one learnable grid per resolution, finest first."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from coolchic_pl.model.quantizer import NoiseType, QuantizerType, quantize

ENCODER_GAIN = 16.0


def grid_sizes(image_size: tuple[int, int], n_grids: int) -> list[tuple[int, int]]:
    """(height, width) of grid i = ceil(H / 2^i) x ceil(W / 2^i)."""
    height, width = image_size
    return [(math.ceil(height / 2**i), math.ceil(width / 2**i)) for i in range(n_grids)]


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
        if any(c not in (0, 1) for c in (*n_ft_per_res, *hyper_per_res)):
            raise ValueError(f"latent and hyper-latent channels must be 0 or 1, got {list(n_ft_per_res)} and "
                             f"{list(hyper_per_res)}")
        self.n_ft_per_res = tuple(int(c) for c in n_ft_per_res)
        self.encoder_gain = encoder_gain
        self.n_synthesis_grids = len(self.n_ft_per_res)
        hyper_resolutions = [r for r, c in enumerate(hyper_per_res) if c]
        # Per grid, synthesis grids then hyper-latent grids: channels, resolution and size.
        self.channels = list(self.n_ft_per_res) + [1] * len(hyper_resolutions)
        self.resolutions = list(range(self.n_synthesis_grids)) + hyper_resolutions
        all_sizes = grid_sizes(image_size, max(self.resolutions) + 1)
        self.sizes = [all_sizes[r] for r in self.resolutions]
        self.grids = nn.ParameterList(
            nn.Parameter(torch.zeros(1, c, h, w)) for c, (h, w) in zip(self.channels, self.sizes)
        )
        # Split sizes of the flat vector of all latents, in grid order (empty grids included).
        self.numels = [c * h * w for c, (h, w) in zip(self.channels, self.sizes)]

    @property
    def n_latents(self) -> int:
        return sum(self.numels)

    def flat(self) -> Tensor:
        """All gained (unquantised) latents as one vector, grid 0 first, raster order."""
        return torch.cat([g.reshape(-1) for g in self.grids]) * self.encoder_gain

    def coded_grids(self) -> list[int]:
        """Indices of the non-empty grids, in flat order."""
        return [g for g, c in enumerate(self.channels) if c]

    def decoding_order(self) -> list[int]:
        """Non-empty grids coarsest first: the inter-feature contexts of a grid need every
        coarser grid decoded before it."""
        return sorted(self.coded_grids(), key=lambda g: (-self.resolutions[g], g))

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
