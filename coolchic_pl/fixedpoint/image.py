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

from coolchic_pl.fixedpoint.arithmetic import ACTIVATION_LIMIT, DTYPE, check_layer_bound, to_grid
from coolchic_pl.model.coolchic import CoolChic
from coolchic_pl.model.synthesis import Synthesis, SynthesisConv
from coolchic_pl.model.upsampling import Upsampling, mirror_half_kernels


def _filter_rows(x: Tensor, taps: Tensor, rows: int) -> Tensor:
    """sum_t taps[t] * x[..., t + i, :] for output rows i < ``rows`` (dim -2), then the grid."""
    total = torch.zeros((), dtype=DTYPE, device=x.device)
    for t, tap in enumerate(taps.tolist()):
        if tap:
            total = total + tap * x[..., t:t + rows, :]
    return to_grid(total if total.dim() else torch.zeros_like(x[..., :rows, :]))


def _filter_columns(x: Tensor, taps: Tensor, columns: int) -> Tensor:
    return _filter_rows(x.transpose(-1, -2), taps, columns).transpose(-1, -2)


def upsample(upsampling: Upsampling, grids: list[Tensor]) -> Tensor:
    """Integer counterpart of ``Upsampling.forward``: each 1-D pass rounds to the grid."""
    phases = F.pad(mirror_half_kernels(upsampling.upsampling_half_kernels.detach(), upsampling.ups_k_size),
                   (0, 1))[:, upsampling.polyphase_index].to(DTYPE)
    refine = mirror_half_kernels(upsampling.refine_half_kernels.detach(), upsampling.refine_k_size).to(DTYPE)
    before, after = upsampling.replicate_padding
    half = upsampling.refine_k_size // 2
    dense = grids[-1]
    for level, target in enumerate(range(len(grids) - 2, upsampling.first_used - 1, -1)):
        _, height, width = upsampling.grid_shapes[target]
        coarse = dense[0]
        h, w = coarse.shape[-2:]
        padded = F.pad(coarse.unsqueeze(0), (before, after, before, after), mode="replicate")[0]
        rows = torch.stack([_filter_rows(padded, phases[level, p], h) for p in (0, 1)], dim=-2)
        rows = rows.reshape(rows.shape[0], 2 * h, rows.shape[-1])
        cols = torch.stack([_filter_columns(rows, phases[level, p], w) for p in (0, 1)], dim=-1)
        upsampled = cols.reshape(cols.shape[0], 2 * h, 2 * w)[:, :height, :width]
        fine = grids[target][0]
        zero_padded = F.pad(fine, (half, half, half, half))
        refined = _filter_columns(_filter_rows(zero_padded, refine[level], fine.shape[-2]), refine[level],
                                  fine.shape[-1])
        dense = torch.cat([to_grid(refined + fine), upsampled]).unsqueeze(0)
    return dense


def _convolve(layer: SynthesisConv, x: Tensor) -> Tensor:
    """One synthesis layer on [C, H, W]: im2col by slicing, one matrix product, the grid."""
    channels, height, width = x.shape
    k = layer.spec.kernel_size
    weight = layer.weight.detach().to(DTYPE)
    if k == 1:
        columns = x.reshape(channels, height * width)
    else:
        pad = k // 2
        padded = F.pad(x.unsqueeze(0), (pad,) * 4, mode="replicate")[0]
        columns = torch.stack([padded[:, dy:dy + height, dx:dx + width] for dy in range(k) for dx in range(k)],
                              dim=1).reshape(channels * k * k, height * width)
    y = torch.addmm(layer.bias.detach().to(DTYPE).view(-1, 1), weight.reshape(weight.shape[0], -1), columns)
    y = to_grid(y).view(-1, height, width)
    if layer.spec.residual:
        y = (y + x).clamp_(-ACTIVATION_LIMIT, ACTIVATION_LIMIT)
    if layer.spec.relu:
        y = torch.relu_(y)
    return y


def synthesise(synthesis: Synthesis, latents: Tensor) -> Tensor:
    """Integer counterpart of ``Synthesis.forward`` without its output range (applied with
    the sample rounding, see :mod:`coolchic_pl.fixedpoint.samples`)."""
    x = latents
    for layer in synthesis.layers:
        x = _convolve(layer, x)
    if synthesis.stabiliser is not None:
        x = (x + _convolve(synthesis.stabiliser, latents)).clamp_(-ACTIVATION_LIMIT, ACTIVATION_LIMIT)
    return x


def check_bounds(model: CoolChic) -> None:
    """Every layer after the latents keeps its sums exact (see ``check_layer_bound``)."""
    upsampling = model.upsampling
    for family in ("upsampling", "refine"):
        kernels = getattr(upsampling, f"{family}_half_kernels")
        size = upsampling.ups_k_size if family == "upsampling" else upsampling.refine_k_size
        check_layer_bound(mirror_half_kernels(kernels, size), None, f"{family} filters")
    layers = list(model.synthesis.layers)
    if model.synthesis.stabiliser is not None:
        layers.append(model.synthesis.stabiliser)
    for index, layer in enumerate(layers):
        check_layer_bound(layer.weight, layer.bias, f"synthesis layer {index + 1}")


def raw_output(model: CoolChic) -> Tensor:
    """[outputs, H, W] synthesis output on the 2^-16 grid at the image size (a smaller
    output, from empty finest latent grids, repeats each sample, as ``CoolChic`` does)."""
    latents = torch.round(model.latent.flat().detach()).to(DTYPE).clamp_(-ACTIVATION_LIMIT, ACTIVATION_LIMIT)
    grids = model.latent.unflatten(latents)[:model.latent.n_synthesis_grids]
    output = synthesise(model.synthesis, upsample(model.upsampling, grids)[0])
    height, width = model.image_size
    if output.shape[-2:] != (height, width):
        rows = torch.arange(height, device=output.device) * output.shape[-2] // height
        columns = torch.arange(width, device=output.device) * output.shape[-1] // width
        output = output.index_select(-2, rows).index_select(-1, columns)
    return output
