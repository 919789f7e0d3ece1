"""A Cool-Chic's output in the integer arithmetic of :mod:`coolchic_pl.fixedpoint.arithmetic`.

The same layers as :class:`~coolchic_pl.model.upsampling.Upsampling` and
:class:`~coolchic_pl.model.synthesis.Synthesis`, evaluated by the compiled kernels of
:mod:`coolchic_pl._native` on float64 NumPy arrays: sums of exact values in any order, never a
convolution backend's FFT or Winograd algorithm, whose sums are not exact.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from coolchic_pl import _native
from coolchic_pl.fixedpoint.arithmetic import ACTIVATION_LIMIT, DTYPE, UNIT, check_layer_bound, rounded_bias
from coolchic_pl.model.coolchic import CoolChic
from coolchic_pl.model.synthesis import Synthesis, SynthesisConv
from coolchic_pl.model.upsampling import Upsampling


def _filter(x: np.ndarray, phases: list[list[float]], length: int, axis: int) -> np.ndarray:
    """Along ``axis`` (-2 or -1): output i of phase p, at len(phases) * i + p, is
    floor(1/2 + sum_t phases[p][t] x[..., i + t, ...]), clamped; ``length`` outputs per phase."""
    x = np.ascontiguousarray(x)
    inner = x.shape[-1] if axis == -2 else 1
    in_length = x.shape[axis]
    shape = list(x.shape)
    shape[axis] = length * len(phases)
    y = np.empty(shape)
    _native.filter_1d(x, x.size // (in_length * inner), in_length, inner, np.asarray(phases, dtype=np.float64),
                      len(phases[0]), len(phases), length, y)
    return y


def _filter_rows(x: np.ndarray, phases: list[list[float]], rows: int) -> np.ndarray:
    """[P, R, W] -> [P, rows * len(phases), W], filtered along R."""
    return _filter(x, phases, rows, -2)


def _filter_columns(x: np.ndarray, phases: list[list[float]], columns: int) -> np.ndarray:
    """[..., W] -> [..., columns * len(phases)], filtered along W."""
    return _filter(x, phases, columns, -1)


def upsample(upsampling: Upsampling, grids: list[np.ndarray]) -> np.ndarray:
    """Integer counterpart of ``Upsampling.forward`` on [C, h, w] grids in activation units:
    each 1-D pass rounds."""
    _, phases, refine = (kernels.detach().to(DTYPE).tolist() for kernels in upsampling.kernels())
    before, after = upsampling.replicate_padding
    half = upsampling.refine_k_size // 2
    dense = grids[-1]
    for level, target in enumerate(range(len(grids) - 2, upsampling.first_used - 1, -1)):
        _, height, width = upsampling.grid_shapes[target]
        _, h, w = dense.shape
        padded = np.pad(dense, ((0, 0), (before, after), (before, after)), mode="edge")
        upsampled = _filter_columns(_filter_rows(padded, phases[level], h), phases[level], w)[:, :height, :width]
        fine = grids[target]
        zero_padded = np.pad(fine, ((0, 0), (half, half), (half, half)))
        refined = _filter_columns(_filter_rows(zero_padded, [refine[level]], fine.shape[-2]), [refine[level]],
                                  fine.shape[-1])
        dense = np.concatenate([np.clip(refined + fine, -ACTIVATION_LIMIT, ACTIVATION_LIMIT), upsampled])
    return dense


def _layer_tuple(layer: SynthesisConv) -> tuple:
    """A layer as :mod:`coolchic_pl._native` takes it: its weight as a product [out, in k^2],
    its bias in activation units plus the rounding half."""
    weight = layer.weight.detach().to(DTYPE)
    return (weight.reshape(weight.shape[0], -1).cpu().numpy(), rounded_bias(layer.bias).cpu().numpy(),
            weight[0].numel(), weight.shape[0], int(layer.spec.residual), int(layer.spec.relu))


def _pointwise_run(layers: list[SynthesisConv], x: np.ndarray) -> np.ndarray:
    """Consecutive 1x1 layers on [C, n] (compiled: each block of pixels through every layer)."""
    channels, n = x.shape
    y = np.empty((layers[-1].weight.shape[0], n))
    _native.pointwise_run(np.ascontiguousarray(x), channels, n, [_layer_tuple(layer) for layer in layers], y)
    return y


def _spatial_layer(layer: SynthesisConv, x: np.ndarray) -> np.ndarray:
    """A k x k layer (replicate padding) on [C, H, W]."""
    channels, height, width = x.shape
    y = np.empty((layer.weight.shape[0], height, width))
    _native.spatial_layer(np.ascontiguousarray(x), channels, height, width, _layer_tuple(layer),
                          layer.spec.kernel_size, y)
    return y


def synthesise(synthesis: Synthesis, latents: np.ndarray) -> np.ndarray:
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
        x = _pointwise_run(run, x.reshape(x.shape[0], height * width)).reshape(-1, height, width)
    if synthesis.stabiliser is not None:
        stabilised = _pointwise_run([synthesis.stabiliser], latents.reshape(channels, -1)).reshape(x.shape)
        x = np.clip(x + stabilised, -ACTIVATION_LIMIT, ACTIVATION_LIMIT)
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
    output, from empty finest latent grids, repeats each sample, as ``CoolChic`` does), on the
    model's device; computed on the CPU by :mod:`coolchic_pl._native`."""
    latents = torch.round(model.latent.flat().detach()).to(DTYPE).mul_(UNIT)
    latents.clamp_(-ACTIVATION_LIMIT, ACTIVATION_LIMIT)
    grids = [np.ascontiguousarray(grid[0].cpu().numpy())
             for grid in model.latent.unflatten(latents)[:model.latent.n_synthesis_grids]]
    output = synthesise(model.synthesis, upsample(model.upsampling, grids))
    height, width = model.image_size
    if output.shape[-2:] != (height, width):
        rows = np.arange(height) * output.shape[-2] // height
        columns = np.arange(width) * output.shape[-1] // width
        output = output[:, rows][:, :, columns]
    return torch.from_numpy(np.ascontiguousarray(output)).to(latents.device)
