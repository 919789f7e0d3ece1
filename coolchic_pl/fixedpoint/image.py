"""A Cool-Chic's output in the integer arithmetic of :mod:`coolchic_pl.fixedpoint.arithmetic`.

The same layers as :class:`~coolchic_pl.model.upsampling.Upsampling` and
:class:`~coolchic_pl.model.synthesis.Synthesis`, written with element-wise products,
slicing and matrix products only: a convolution backend may pick an FFT or Winograd
algorithm whose sums are not exact, a matrix product of exact values cannot.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from coolchic_pl.fixedpoint.arithmetic import (
    ACTIVATION_LIMIT, DTYPE, UNIT, check_layer_bound, rounded_bias, to_activation_,
)
from coolchic_pl.model.coolchic import CoolChic
from coolchic_pl.model.synthesis import Synthesis, SynthesisConv
from coolchic_pl.model.upsampling import Upsampling


# Pixels per block of a run of 1x1 layers, rows per stripe of a larger kernel: the hidden
# activations of one block stay in cache (3x faster than whole-image passes at 768x512).
_BLOCK_PIXELS = 8192


def _filter_rows(x: Tensor, taps: list[float], rows: int) -> Tensor:
    """floor(1/2 + sum_t taps[t] x[..., t + i, :]) for output rows i < ``rows`` (dim -2)."""
    total = torch.full_like(x[..., :rows, :], 0.5)
    for t, tap in enumerate(taps):
        if tap:
            total.add_(x[..., t:t + rows, :], alpha=tap)
    return to_activation_(total)


def _filter_columns(x: Tensor, taps: list[float], columns: int) -> Tensor:
    return _filter_rows(x.transpose(-1, -2), taps, columns).transpose(-1, -2)


def upsample(upsampling: Upsampling, grids: list[Tensor]) -> Tensor:
    """Integer counterpart of ``Upsampling.forward`` on [C, h, w] grids in activation units:
    each 1-D pass rounds."""
    _, phases, refine = (kernels.detach().to(DTYPE).tolist() for kernels in upsampling.kernels())
    before, after = upsampling.replicate_padding
    half = upsampling.refine_k_size // 2
    dense = grids[-1]
    for level, target in enumerate(range(len(grids) - 2, upsampling.first_used - 1, -1)):
        _, height, width = upsampling.grid_shapes[target]
        channels, h, w = dense.shape
        padded = F.pad(dense.unsqueeze(0), (before, after, before, after), mode="replicate")[0]
        rows = torch.stack([_filter_rows(padded, phases[level][p], h) for p in (0, 1)], dim=-2)
        rows = rows.reshape(channels, 2 * h, rows.shape[-1])
        cols = torch.stack([_filter_columns(rows, phases[level][p], w) for p in (0, 1)], dim=-1)
        upsampled = cols.reshape(channels, 2 * h, 2 * w)[:, :height, :width]
        fine = grids[target]
        zero_padded = F.pad(fine, (half, half, half, half))
        refined = _filter_columns(_filter_rows(zero_padded, refine[level], fine.shape[-2]), refine[level],
                                  fine.shape[-1])
        dense = torch.cat([refined.add_(fine).clamp_(-ACTIVATION_LIMIT, ACTIVATION_LIMIT), upsampled])
    return dense


def _layer_output(layer: SynthesisConv, columns: Tensor, source: Tensor | None) -> Tensor:
    """One layer on [C_in k^2, n] im2col columns; ``source`` [C, n] is the residual input."""
    weight = layer.weight.detach().to(DTYPE)
    y = torch.addmm(rounded_bias(layer.bias).view(-1, 1), weight.reshape(weight.shape[0], -1), columns)
    if source is None:
        return to_activation_(y, layer.spec.relu)
    return y.floor_().add_(source).clamp_(0.0 if layer.spec.relu else -ACTIVATION_LIMIT, ACTIVATION_LIMIT)


def _pointwise_run(layers: list[SynthesisConv], x: Tensor) -> Tensor:
    """Consecutive 1x1 layers on [C, n], block of pixels by block of pixels."""
    blocks = []
    for block in x.split(_BLOCK_PIXELS, dim=1):
        for layer in layers:
            block = _layer_output(layer, block, block if layer.spec.residual else None)
        blocks.append(block)
    return torch.cat(blocks, dim=1)


def _spatial_layer(layer: SynthesisConv, x: Tensor) -> Tensor:
    """A k x k layer (replicate padding) on [C, H, W], stripe of rows by stripe of rows, each
    through im2col by slicing and one matrix product."""
    channels, height, width = x.shape
    k = layer.spec.kernel_size
    padded = F.pad(x.unsqueeze(0), (k // 2,) * 4, mode="replicate")[0]
    rows_per_stripe = max(1, _BLOCK_PIXELS // width)
    stripes = []
    for top in range(0, height, rows_per_stripe):
        rows = min(rows_per_stripe, height - top)
        columns = torch.stack([padded[:, top + dy:top + dy + rows, dx:dx + width] for dy in range(k)
                               for dx in range(k)], dim=1).reshape(channels * k * k, rows * width)
        source = x[:, top:top + rows].reshape(channels, -1) if layer.spec.residual else None
        stripes.append(_layer_output(layer, columns, source).view(-1, rows, width))
    return torch.cat(stripes, dim=1)


def synthesise(synthesis: Synthesis, latents: Tensor) -> Tensor:
    """Integer counterpart of ``Synthesis.forward`` on [C, H, W] activation units, without
    its output range (applied with the sample rounding, :mod:`coolchic_pl.fixedpoint.samples`)."""
    channels, height, width = latents.shape
    x = latents
    layers = list(synthesis.layers)
    while layers:
        if layers[0].spec.kernel_size > 1:
            x = _spatial_layer(layers.pop(0), x)
            continue
        run = []
        while layers and layers[0].spec.kernel_size == 1:
            run.append(layers.pop(0))
        x = _pointwise_run(run, x.reshape(x.shape[0], height * width)).view(-1, height, width)
    if synthesis.stabiliser is not None:
        stabilised = _pointwise_run([synthesis.stabiliser], latents.reshape(channels, -1)).view_as(x)
        x = (x + stabilised).clamp_(-ACTIVATION_LIMIT, ACTIVATION_LIMIT)
    return x


def check_bounds(model: CoolChic) -> None:
    """Every layer after the latents keeps its sums exact (see ``check_layer_bound``)."""
    full, _, refine = model.upsampling.kernels()
    check_layer_bound(full, None, "upsampling filters")
    check_layer_bound(refine, None, "refine filters")
    layers = list(model.synthesis.layers)
    if model.synthesis.stabiliser is not None:
        layers.append(model.synthesis.stabiliser)
    for index, layer in enumerate(layers):
        check_layer_bound(layer.weight, layer.bias, f"synthesis layer {index + 1}")


def raw_output(model: CoolChic) -> Tensor:
    """[outputs, H, W] synthesis output in activation units at the image size (a smaller
    output, from empty finest latent grids, repeats each sample, as ``CoolChic`` does)."""
    latents = torch.round(model.latent.flat().detach()).to(DTYPE).mul_(UNIT)
    latents.clamp_(-ACTIVATION_LIMIT, ACTIVATION_LIMIT)
    grids = [grid[0] for grid in model.latent.unflatten(latents)[:model.latent.n_synthesis_grids]]
    output = synthesise(model.synthesis, upsample(model.upsampling, grids))
    height, width = model.image_size
    if output.shape[-2:] != (height, width):
        rows = torch.arange(height, device=output.device) * output.shape[-2] // height
        columns = torch.arange(width, device=output.device) * output.shape[-1] // width
        output = output.index_select(-2, rows).index_select(-1, columns)
    return output
