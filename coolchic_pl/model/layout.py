"""The shapes of one Cool-Chic, from its architecture and image size alone: latent grids,
inter-feature context inputs, upsampling phases, network parameters, multiplications.

The torch modules are built from these, and the decoder, which never builds a module,
reads a file with them: one description of the layout, no torch import on the decode path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from coolchic_pl.model.architecture import CoolChicArchitecture
from coolchic_pl.model.contexts import context_offsets
from coolchic_pl.model.layers import parse_synthesis_layers

# The networks a file sends, in its order.
NETWORK_NAMES = ("arm", "synthesis", "upsampling")
# (name within its network, shape) per parameter, in ``named_parameters`` order.
ParameterShapes = list[tuple[str, tuple[int, ...]]]


def grid_sizes(image_size: tuple[int, int], n_grids: int) -> list[tuple[int, int]]:
    """(height, width) of grid i = ceil(H / 2^i) x ceil(W / 2^i)."""
    height, width = image_size
    return [(math.ceil(height / 2**i), math.ceil(width / 2**i)) for i in range(n_grids)]


@dataclass(frozen=True)
class LatentLayout:
    """The latent grids in flat order: the synthesis grids (one per resolution, 0 or 1
    channel), then the hyper-latent grids (one per resolution r with ``hyper_per_res[r]``),
    which only the entropy model reads."""

    channels: tuple[int, ...]
    resolutions: tuple[int, ...]
    sizes: tuple[tuple[int, int], ...]
    n_synthesis_grids: int

    @classmethod
    def of(cls, image_size: tuple[int, int], n_ft_per_res: Sequence[int],
           hyper_per_res: Sequence[int] = ()) -> LatentLayout:
        if any(c not in (0, 1) for c in (*n_ft_per_res, *hyper_per_res)):
            raise ValueError(f"latent and hyper-latent channels must be 0 or 1, got {list(n_ft_per_res)} and "
                             f"{list(hyper_per_res)}")
        hyper_resolutions = [r for r, c in enumerate(hyper_per_res) if c]
        channels = tuple(int(c) for c in n_ft_per_res) + (1,) * len(hyper_resolutions)
        resolutions = tuple(range(len(n_ft_per_res))) + tuple(hyper_resolutions)
        all_sizes = grid_sizes(image_size, max(resolutions) + 1)
        return cls(channels, resolutions, tuple(all_sizes[r] for r in resolutions), len(n_ft_per_res))

    @property
    def numels(self) -> list[int]:
        """Latents per grid, empty grids included: the split sizes of the flat vector."""
        return [c * h * w for c, (h, w) in zip(self.channels, self.sizes)]

    @property
    def n_latents(self) -> int:
        return sum(self.numels)

    def coded_grids(self) -> list[int]:
        """Indices of the non-empty grids, in flat order."""
        return [g for g, c in enumerate(self.channels) if c]

    def decoding_order(self) -> list[int]:
        """Non-empty grids coarsest first: the inter-feature contexts of a grid need every
        coarser grid decoded before it."""
        return sorted(self.coded_grids(), key=lambda g: (-self.resolutions[g], g))

    def synthesis_shapes(self) -> list[tuple[int, int, int]]:
        """(channels, height, width) of the grids the upsampling reads."""
        return [(c, h, w) for c, (h, w) in zip(self.channels, self.sizes)][:self.n_synthesis_grids]

    def ifce_geometry(self) -> tuple[list[tuple[int, int]], list[int]]:
        """Sizes and resolutions of the coded grids, in flat order: what the inter-feature
        contexts are laid out over."""
        coded = self.coded_grids()
        return [self.sizes[g] for g in coded], [self.resolutions[g] for g in coded]


def ifce_inputs(resolutions: Sequence[int], grid: int) -> list[int]:
    """Grids (indices in flat order) feeding grid ``grid``'s IFCE: every grid at a coarser
    resolution, nearest resolution first, in flat order within a resolution."""
    own = resolutions[grid]
    return sorted((g for g, r in enumerate(resolutions) if r > own), key=lambda g: (resolutions[g], g))


def ifce_sources(sizes: Sequence[tuple[int, int]], resolutions: Sequence[int], grid: int) -> list[tuple[int, int, int]]:
    """(start in the flat latent vector, width, resolution shift) of each input of grid
    ``grid``'s IFCE: the input of latent (y, x) is that grid's (y >> shift, x >> shift)."""
    starts = [0]
    for h, w in sizes:
        starts.append(starts[-1] + h * w)
    return [(starts[source], sizes[source][1], resolutions[source] - resolutions[grid])
            for source in ifce_inputs(resolutions, grid)]


def ifce_grids(resolutions: Sequence[int], n_ifce_grids: int) -> list[int]:
    """Positions, among the coded grids, of those with inter-feature contexts."""
    return [g for g, r in enumerate(resolutions) if r < n_ifce_grids]


def polyphase_index(kernel_size: int) -> tuple[list[list[int]], int, int]:
    """Split the stride-2 transposed convolution into two ordinary convolutions.

    The reference upsamples by replicate-padding k/2 samples, applying a stride-2
    transposed convolution and cropping 3k/2 - 1 samples per side. Output sample 2i + r
    then equals sum_t kernel[index[r][t]] * x[i + first + t] with x clamped at the borders;
    index entries equal to ``kernel_size`` select an appended zero. Returns
    (index [2][taps], first offset, last offset).
    """
    crop = 3 * kernel_size // 2 - 1
    taps: dict[tuple[int, int], int] = {}
    for phase in (0, 1):
        for j in range(kernel_size):
            if (phase + crop - j) % 2 == 0:
                taps[phase, (phase + crop - j) // 2 - kernel_size // 2] = j
    first = min(offset for _, offset in taps)
    last = max(offset for _, offset in taps)
    index = [[kernel_size] * (last - first + 1) for _ in (0, 1)]
    for (phase, offset), j in taps.items():
        index[phase][offset - first] = j
    return index, first, last


def check_upsampling(grid_shapes: Sequence[tuple[int, int, int]], ups_k_size: int, refine_k_size: int) -> int:
    """Raise ValueError for an upsampling that cannot be built; return its first used grid."""
    if ups_k_size < 4 or ups_k_size % 2:
        raise ValueError(f"upsampling kernel size must be even and >= 4, got {ups_k_size}")
    if refine_k_size < 1 or refine_k_size % 2 == 0:
        raise ValueError(f"refine (pre-concatenation) kernel size must be odd, got {refine_k_size}")
    channels = [c for c, _, _ in grid_shapes]
    if channels[-1] == 0:
        raise ValueError("the coarsest latent grid must have a channel")
    first_used = next(i for i, c in enumerate(channels) if c)
    if not all(channels[first_used:]):
        raise ValueError(f"only the finest latent grids may be empty, got channels {channels}")
    return first_used


def upsampling_macs(grid_shapes: Sequence[tuple[int, int, int]], ups_k_size: int, refine_k_size: int) -> int:
    """Multiply-accumulates of one upsampling, counted as the reference counts its separable
    decoder-side filters (fvcore convention: taps x input samples for the transposed
    convolutions, which run on the replicate-padded input, width first)."""
    first_used = next(i for i, (c, _, _) in enumerate(grid_shapes) if c)
    k, total, n_channels = ups_k_size, 0, 1
    for target in range(len(grid_shapes) - 2, first_used - 1, -1):
        _, height, width = grid_shapes[target + 1]
        total += n_channels * k * (height * (width + k) + (height + k) * 2 * width)
        _, height, width = grid_shapes[target]
        total += 2 * refine_k_size * height * width
        n_channels += 1
    return total


def network_shapes(architecture: CoolChicArchitecture, image_size: tuple[int, int],
                   n_outputs: int) -> dict[str, ParameterShapes]:
    """The parameters of each network, by name within it, in the order the modules of
    :mod:`coolchic_pl.model` hold them (which is the order a file sends them in). Raises
    ValueError for an architecture those modules refuse."""
    architecture = architecture.for_image(image_size)
    layout = LatentLayout.of(image_size, architecture.n_ft_per_res, architecture.hyper_per_res)
    check_upsampling(layout.synthesis_shapes(), architecture.ups_k_size, architecture.ups_preconcat_k_size)
    context_offsets(architecture.dim_arm, architecture.context_order)
    width = architecture.dim_arm + architecture.n_ifce_features
    arm: ParameterShapes = []
    if architecture.n_ifce_features:
        _, resolutions = layout.ifce_geometry()
        for position, grid in enumerate(ifce_grids(resolutions, architecture.n_ifce_grids)):
            arm += _linear(f"ifce.layers.{position}", len(ifce_inputs(resolutions, grid)),
                           architecture.n_ifce_features)
    for index in range(architecture.n_hidden_layers_arm):
        arm += _linear(f"hidden.{index}", width, width)
    arm += _linear("output", width, 2)
    if architecture.arm_stabiliser:
        arm += _linear("stabiliser", width, 2)
    n_inputs = sum(architecture.n_ft_per_res)
    synthesis: ParameterShapes = []
    in_channels = n_inputs
    for index, spec in enumerate(parse_synthesis_layers(architecture.layers_synthesis, n_inputs, n_outputs)):
        synthesis += _convolution(f"layers.{index}", in_channels, spec.out_channels, spec.kernel_size)
        in_channels = spec.out_channels
    if architecture.synthesis_stabiliser:
        synthesis += _convolution("stabiliser", n_inputs, n_outputs, 1)
    n_levels = layout.n_synthesis_grids - 1
    upsampling = [("upsampling_half_kernels", (n_levels, architecture.ups_k_size // 2)),
                  ("refine_half_kernels", (n_levels, (architecture.ups_preconcat_k_size + 1) // 2))]
    return {"arm": arm, "synthesis": synthesis, "upsampling": upsampling}


def _linear(name: str, n_in: int, n_out: int) -> ParameterShapes:
    return [(f"{name}.weight", (n_out, n_in)), (f"{name}.bias", (n_out,))]


def _convolution(name: str, n_in: int, n_out: int, kernel: int) -> ParameterShapes:
    return [(f"{name}.weight", (n_out, n_in, kernel, kernel)), (f"{name}.bias", (n_out,))]


def mac_per_pixel(architecture: CoolChicArchitecture, image_size: tuple[int, int], n_outputs: int) -> float:
    """Multiply-accumulates per image pixel of one decoding.

    Counts what the reference counts with fvcore on its eval-mode decoder: matrix products
    and convolutions (ARM, separable upsampling filters, synthesis), not element-wise work,
    so the figures compare with its documented 330 to 1430.
    """
    architecture = architecture.for_image(image_size)
    layout = LatentLayout.of(image_size, architecture.n_ft_per_res, architecture.hyper_per_res)
    shapes = network_shapes(architecture, image_size, n_outputs)
    width = architecture.dim_arm + architecture.n_ifce_features
    arm_per_latent = architecture.n_hidden_layers_arm * width**2 + 2 * width * (1 + architecture.arm_stabiliser)
    ifce = 0
    if architecture.n_ifce_features:
        sizes, resolutions = layout.ifce_geometry()
        weights = [math.prod(shape) for name, shape in shapes["arm"] if name.startswith("ifce") and
                   name.endswith("weight")]
        ifce = sum(n * sizes[g][0] * sizes[g][1]
                   for n, g in zip(weights, ifce_grids(resolutions, architecture.n_ifce_grids)))
    grid_shapes = layout.synthesis_shapes()
    upsampling = upsampling_macs(grid_shapes, architecture.ups_k_size, architecture.ups_preconcat_k_size)
    _, height, width_out = next(shape for shape in grid_shapes if shape[0])
    synthesis = sum(math.prod(shape) for name, shape in shapes["synthesis"] if name.endswith("weight"))
    total = arm_per_latent * layout.n_latents + ifce + upsampling + synthesis * height * width_out
    return total / (image_size[0] * image_size[1])
