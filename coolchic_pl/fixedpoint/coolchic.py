"""A Cool-Chic and an inter frame as the integer decoder holds them: arrays, no modules.

The decoder reads a file into these and computes the frame from them without importing
torch; the encoder converts its trained modules into them (:meth:`IntegerCoolChic.from_module`)
so that its reconstruction runs the same functions on the same values.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from coolchic_pl.model.architecture import CoolChicArchitecture
from coolchic_pl.model.layout import NETWORK_NAMES, LatentLayout

if TYPE_CHECKING:
    from coolchic_pl.model.coolchic import CoolChic
    from coolchic_pl.model.interframe import InterCoolChic

# By network name ("arm", ...), each parameter by its name within the network ("hidden.0.weight").
Networks = dict[str, dict[str, np.ndarray]]


@dataclass
class IntegerCoolChic:
    """One Cool-Chic with quantised networks and integer latents.

    ``networks`` holds every parameter's exact value in float64 (an integer multiple of its
    q-step), ``latents`` every grid's integer latents, flat in grid order, and
    ``output_range`` the (low, high) sample values each output's [0, 1] maps onto, if the
    architecture has one."""

    architecture: CoolChicArchitecture
    image_size: tuple[int, int]
    n_outputs: int
    networks: Networks
    latents: np.ndarray
    output_range: np.ndarray | None = None

    @cached_property
    def layout(self) -> LatentLayout:
        return LatentLayout.of(self.image_size, self.architecture.n_ft_per_res, self.architecture.hyper_per_res)

    def synthesis_grids(self) -> list[np.ndarray]:
        """[C, h, w] int64 latents of each grid the upsampling reads, finest first."""
        layout = self.layout
        starts = np.cumsum([0] + layout.numels)
        return [self.latents[starts[g]:starts[g + 1]].reshape(layout.channels[g], *layout.sizes[g])
                for g in range(layout.n_synthesis_grids)]

    @classmethod
    def from_module(cls, model: CoolChic, bitdepth: int) -> IntegerCoolChic:
        """The trained ``model``'s quantised networks, rounded latents and output range (the
        range is rounded to the sample grid of ``bitdepth``, as the file sends it)."""
        networks = {name: {key: value.detach().cpu().double().numpy()
                           for key, value in getattr(model, name).named_parameters()} for name in NETWORK_NAMES}
        latents = np.round(model.latent.flat().detach().cpu().numpy()).astype(np.int64)
        output_range = None
        synthesis = model.synthesis
        if synthesis.has_output_range:
            max_value = np.float32(2**bitdepth - 1)
            low = np.round(synthesis.output_offset.detach().cpu().numpy().reshape(-1) * max_value)
            span = np.round(synthesis.output_scale.detach().cpu().numpy().reshape(-1) * max_value)
            output_range = np.stack([low, low + span], axis=1).astype(np.int64)
        return cls(model.architecture, tuple(model.image_size), model.n_outputs, networks, latents, output_range)


@dataclass
class IntegerInterFrame:
    """What an inter frame's samples are computed from: its references' integer samples
    [3, H, W] (shifted by their global translations), the base flows [references, 2, H, W]
    (int64, 1/64 pel, relative to the shifted references), the warp filter length, and its
    Cool-Chics (None for one the frame does not have)."""

    references: list[np.ndarray]
    base_flows: np.ndarray
    warp_filter_size: int
    translations: tuple[tuple[int, int], ...]
    residue: IntegerCoolChic | None
    motion: IntegerCoolChic | None

    def coolchics(self) -> list[IntegerCoolChic]:
        return [c for c in (self.residue, self.motion) if c is not None]

    @classmethod
    def from_module(cls, model: InterCoolChic, bitdepth: int) -> IntegerInterFrame:
        max_value = 2**bitdepth - 1
        references = [np.round(getattr(model, f"reference_{i}")[0].detach().cpu().double().numpy() * max_value)
                      for i in range(model.n_references)]
        parameters = model.frame_parameters

        def integer(coolchic: CoolChic | None) -> IntegerCoolChic | None:
            return None if coolchic is None else IntegerCoolChic.from_module(coolchic, bitdepth)

        return cls(references, model.base_flow_units.cpu().numpy(), parameters.warp_filter_size,
                   parameters.translations, integer(model.residue), integer(model.motion))


def shift(samples: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Integer translation of [C, H, W], borders replicated: output(x, y) = samples(clamp(x + dx),
    clamp(y + dy)), as :func:`coolchic_pl.model.warp.shift` does for the encoder."""
    _, height, width = samples.shape
    columns = np.clip(np.arange(width) + dx, 0, width - 1)
    rows = np.clip(np.arange(height) + dy, 0, height - 1)
    return samples.take(rows, axis=1).take(columns, axis=2)  # C-ordered, as the compiled warp reads it
