"""Inter-feature context extraction (Cool-Chic 5's IFCE): contexts for a latent from the
grids coarser than its own.

A grid's spatial context only sees its own already-decoded neighbours; the coarser grids,
decoded before it, say much about it too. For each of the finest ``n_ifce_grids`` grids a
linear layer maps the values of every coarser grid at the same place (nearest
neighbour: the coarser grid's sample that covers the position) to ``n_features``
contexts, which the ARM receives after the spatial ones. Cool-Chic 5 applies the layer at
the next-coarser resolution and upsamples its output by 2; a linear map commutes with
nearest upsampling, and every coarser grid is constant on the 2x2 blocks, so gathering
at the grid's own resolution gives the same contexts.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from coolchic_pl.model.layout import ifce_grids, ifce_inputs, ifce_sources


def ifce_gather_index(sizes: Sequence[tuple[int, int]], resolutions: Sequence[int], grid: int) -> Tensor:
    """[h * w, n_inputs] positions in the flat latent vector of grid ``grid``'s IFCE inputs."""
    height, width = sizes[grid]
    rows = torch.arange(height).view(-1, 1)
    cols = torch.arange(width).view(1, -1)
    columns = [(start + (rows >> shift) * source_width + (cols >> shift)).reshape(-1)
               for start, source_width, shift in ifce_sources(sizes, resolutions, grid)]
    if not columns:
        return torch.zeros(height * width, 0, dtype=torch.long)
    return torch.stack(columns, dim=1)


class InterFeatureContext(nn.Module):
    """One linear layer per IFCE grid; ``forward`` returns the contexts of every latent.

    ``sizes`` and ``resolutions`` describe the coded (non-empty) grids in flat order.
    """

    def __init__(self, sizes: Sequence[tuple[int, int]], resolutions: Sequence[int], n_ifce_grids: int,
                 n_features: int):
        super().__init__()
        self.n_features = n_features
        self.sizes, self.resolutions = list(sizes), list(resolutions)
        self.grids = ifce_grids(resolutions, n_ifce_grids)
        self.numels = [h * w for h, w in sizes]
        self.layers = nn.ModuleList(nn.Linear(len(ifce_inputs(resolutions, g)), n_features) for g in self.grids)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """As the ARM's output layer: weights ~ N(0, 1/C_out^4), biases 0."""
        with torch.no_grad():
            for layer in self.layers:
                layer.weight.normal_().div_(self.n_features**2)
                layer.bias.zero_()

    def gather_index(self, position: int) -> Tensor:
        """[h * w, n_inputs], as :func:`ifce_gather_index` builds it."""
        return self._stored_index(position).t()

    def _stored_index(self, position: int) -> Tensor:
        """[n_inputs, h * w] (the layout of the ARM's channels-first contexts), built on first
        use on the layers' device: a decoder reads its inputs by :func:`ifce_sources` instead."""
        name = f"index_{position}"
        if name not in self._buffers:
            index = ifce_gather_index(self.sizes, self.resolutions, self.grids[position]).t().contiguous()
            self.register_buffer(name, index.to(self.layers[position].weight.device), persistent=False)
        return self._buffers[name]

    def forward(self, flat_latents: Tensor) -> Tensor:
        """[N] quantised latents -> [n_features, N], channels-first as the ARM's contexts;
        zeros for grids without an IFCE."""
        parts = []
        for position, grid in enumerate(self.grids):
            layer = self.layers[position]
            inputs = torch.index_select(flat_latents, 0, self._stored_index(position).view(-1))
            parts.append((grid, torch.addmm(layer.bias.unsqueeze(1), layer.weight,
                                            inputs.view(-1, self.numels[grid]))))
        by_grid = dict(parts)
        return torch.cat([by_grid.get(g, flat_latents.new_zeros(self.n_features, n))
                          for g, n in enumerate(self.numels)], dim=1)
