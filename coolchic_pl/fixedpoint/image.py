"""A Cool-Chic's output in the integer arithmetic of :mod:`coolchic_pl.fixedpoint.arithmetic`.

The same layers as :class:`~coolchic_pl.model.upsampling.Upsampling` and
:class:`~coolchic_pl.model.synthesis.Synthesis`, read from an
:class:`~coolchic_pl.fixedpoint.coolchic.IntegerCoolChic` and evaluated by the compiled kernels
of :mod:`coolchic_pl._native` on float64 NumPy arrays: sums of exact values in any order, never
a convolution backend's FFT or Winograd algorithm, whose sums are not exact.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from coolchic_pl import _native
from coolchic_pl.fixedpoint.arithmetic import ACTIVATION_LIMIT, UNIT, check_layer_bound, rounded_bias
from coolchic_pl.fixedpoint.coolchic import IntegerCoolChic
from coolchic_pl.model.layers import SynthesisLayerSpec, parse_synthesis_layers
from coolchic_pl.model.layout import polyphase_index


def _filter(x: np.ndarray, phases: np.ndarray, length: int, offset: int, zero: bool, axis: int,
            out: np.ndarray | None = None) -> np.ndarray:
    """Along ``axis`` (-2 or -1), output o = len(phases) * i + p for o < ``length``:
    floor(1/2 + sum_t phases[p][t] x[..., i + t + offset, ...]), clamped, the inputs beyond x
    padded with zeros (``zero``) or the nearest one; into ``out`` when given (contiguous)."""
    x = np.ascontiguousarray(x)
    inner = x.shape[-1] if axis == -2 else 1
    in_length = x.shape[axis]
    shape = list(x.shape)
    shape[axis] = length
    y = np.empty(shape) if out is None else out
    taps = np.ascontiguousarray(phases, dtype=np.float64).reshape(-1, np.shape(phases)[-1])
    _native.filter_1d(x, x.size // (in_length * inner), in_length, inner, taps, taps.shape[1], taps.shape[0], length,
                      offset, zero, y)
    return y


def _filter_2d(x: np.ndarray, phases: np.ndarray, height: int, width: int, offset: int, zero: bool,
               out: np.ndarray) -> None:
    """Rows, then columns, each pass rounding: [C, h, w] -> ``out`` [C, height, width]."""
    rows = _filter(x, phases, height, offset, zero, -2)
    _filter(rows, phases, width, offset, zero, -1, out)


class UpsamplingKernels(NamedTuple):
    """The filters the learned half kernels make, per level: the upsampling ones [levels, taps],
    their two polyphase halves [levels, 2, taps], the refine ones [levels, taps]."""

    full: np.ndarray
    phases: np.ndarray
    refine: np.ndarray


def _mirrored(half: np.ndarray, kernel_size: int) -> np.ndarray:
    """(a b c) -> (a b c c b a) for an even size, (a b c b a) for an odd one."""
    return np.concatenate([half, half[..., ::-1][..., kernel_size % 2:]], axis=-1)


def upsampling_kernels(coolchic: IntegerCoolChic) -> UpsamplingKernels:
    """As ``Upsampling.kernels`` makes them from the same half kernels."""
    architecture, parameters = coolchic.architecture, coolchic.networks["upsampling"]
    full = _mirrored(parameters["upsampling_half_kernels"], architecture.ups_k_size)
    index, _, _ = polyphase_index(architecture.ups_k_size)
    phases = np.pad(full, ((0, 0), (0, 1)))[:, np.asarray(index)]
    return UpsamplingKernels(full, phases, _mirrored(parameters["refine_half_kernels"],
                                                     architecture.ups_preconcat_k_size))


def upsample(coolchic: IntegerCoolChic, grids: list[np.ndarray]) -> np.ndarray:
    """Integer counterpart of ``Upsampling.forward`` on [C, h, w] grids in activation units:
    each 1-D pass rounds. The 2x filters read beyond the coarser grid's border its nearest
    sample, the refine filters zeros (the reference's replicate and zero padding), and each
    level is written straight into its place in the next one."""
    _, phases, refine = upsampling_kernels(coolchic)
    _, first, _ = polyphase_index(coolchic.architecture.ups_k_size)
    half = coolchic.architecture.ups_preconcat_k_size // 2
    first_used = next(g for g, grid in enumerate(grids) if grid.shape[0])
    dense = grids[-1]
    for level, target in enumerate(range(len(grids) - 2, first_used - 1, -1)):
        fine = grids[target]
        height, width = fine.shape[-2:]
        level_out = np.empty((1 + dense.shape[0], height, width))
        _filter_2d(dense, phases[level], height, width, first, False, level_out[1:])
        _filter_2d(fine, refine[level][None], height, width, -half, True, level_out[:1])
        level_out[0] += fine[0]
        np.clip(level_out[0], -ACTIVATION_LIMIT, ACTIVATION_LIMIT, out=level_out[0])
        dense = level_out
    return dense


class SynthesisLayer(NamedTuple):
    """A synthesis layer's weight [out, in, k, k] and bias, as the file sends them."""

    spec: SynthesisLayerSpec
    weight: np.ndarray
    bias: np.ndarray


def synthesis_layers(coolchic: IntegerCoolChic) -> tuple[list[SynthesisLayer], SynthesisLayer | None]:
    """The synthesis layers and its stabiliser, if any."""
    architecture, parameters = coolchic.architecture, coolchic.networks["synthesis"]
    specs = parse_synthesis_layers(architecture.layers_synthesis, sum(architecture.n_ft_per_res), coolchic.n_outputs)
    layers = [SynthesisLayer(spec, parameters[f"layers.{i}.weight"], parameters[f"layers.{i}.bias"])
              for i, spec in enumerate(specs)]
    stabiliser = None
    if architecture.synthesis_stabiliser:
        stabiliser = SynthesisLayer(SynthesisLayerSpec(coolchic.n_outputs, 1, False, False),
                                    parameters["stabiliser.weight"], parameters["stabiliser.bias"])
    return layers, stabiliser


def _layer_tuple(layer: SynthesisLayer) -> tuple:
    """A layer as :mod:`coolchic_pl._native` takes it: its weight as a product [out, in k^2],
    its bias in activation units plus the rounding half."""
    weight = np.ascontiguousarray(layer.weight, dtype=np.float64).reshape(layer.weight.shape[0], -1)
    return (weight, rounded_bias(layer.bias), weight.shape[1], weight.shape[0], int(layer.spec.residual),
            int(layer.spec.relu))


def _pointwise_run(layers: list[SynthesisLayer], x: np.ndarray, into: np.ndarray | None = None) -> np.ndarray:
    """Consecutive 1x1 layers on [C, n] (compiled: each block of pixels through every layer);
    added to ``into`` (contiguous [C', n]) and clamped when given, as a stabiliser's output is."""
    channels, n = x.shape
    y = np.empty((layers[-1].weight.shape[0], n)) if into is None else into
    _native.pointwise_run(np.ascontiguousarray(x), channels, n, [_layer_tuple(layer) for layer in layers], y,
                          into is not None)
    return y


def _spatial_layer(layer: SynthesisLayer, x: np.ndarray) -> np.ndarray:
    """A k x k layer (replicate padding) on [C, H, W]."""
    channels, height, width = x.shape
    y = np.empty((layer.weight.shape[0], height, width))
    _native.spatial_layer(np.ascontiguousarray(x), channels, height, width, _layer_tuple(layer),
                          layer.spec.kernel_size, y)
    return y


def synthesise(coolchic: IntegerCoolChic, latents: np.ndarray) -> np.ndarray:
    """Integer counterpart of ``Synthesis.forward`` on [C, H, W] activation units, without
    its output range (applied with the sample rounding, :mod:`coolchic_pl.fixedpoint.samples`)."""
    channels, height, width = latents.shape
    x = latents
    layers, stabiliser = synthesis_layers(coolchic)
    while layers:
        if layers[0].spec.kernel_size > 1:
            x = _spatial_layer(layers.pop(0), x)
            continue
        run = []
        while layers and layers[0].spec.kernel_size == 1:
            run.append(layers.pop(0))
        x = _pointwise_run(run, x.reshape(x.shape[0], height * width)).reshape(-1, height, width)
    if stabiliser is not None:
        _pointwise_run([stabiliser], latents.reshape(channels, -1), into=x.reshape(x.shape[0], -1))
    return x


def check_bounds(coolchic: IntegerCoolChic) -> None:
    """Every layer after the latents keeps its sums exact (see ``check_layer_bound``)."""
    full, _, refine = upsampling_kernels(coolchic)
    check_layer_bound(full, None, "upsampling filters")
    check_layer_bound(refine, None, "refine filters")
    layers, stabiliser = synthesis_layers(coolchic)
    for index, layer in enumerate(layers + [stabiliser] * (stabiliser is not None)):
        check_layer_bound(layer.weight, layer.bias, f"synthesis layer {index + 1}")


def _activations(latents: np.ndarray) -> np.ndarray:
    """Integer latents in activation units, clamped."""
    scaled = latents * UNIT
    return np.clip(scaled, -ACTIVATION_LIMIT, ACTIVATION_LIMIT, out=scaled)


def raw_output(coolchic: IntegerCoolChic) -> np.ndarray:
    """[outputs, H, W] synthesis output in activation units at the image size (a smaller
    output, from empty finest latent grids, repeats each sample, as ``CoolChic`` does)."""
    grids = [_activations(grid) for grid in coolchic.synthesis_grids()]
    output = synthesise(coolchic, upsample(coolchic, grids))
    height, width = coolchic.image_size
    if output.shape[-2:] != (height, width):
        rows = np.arange(height) * output.shape[-2] // height
        columns = np.arange(width) * output.shape[-1] // width
        output = output[:, rows][:, :, columns]
    return output
