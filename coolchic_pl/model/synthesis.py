"""Synthesis: a small convolution stack described by a layer string.

Each comma-separated item is ``<out_ch>-<kernel>-<linear|residual>-<none|relu>``; an
``out_ch`` of ``X`` stands for the number of outputs the frame needs (3 for an image).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coolchic_pl.model.evalcache import VersionedCache
from coolchic_pl.model.pointwise import MIN_HIDDEN_FLOATS, pointwise_layers

_LAYER = re.compile(r"^(?P<out>\d+|X)-(?P<kernel>\d+)-(?P<mode>linear|residual)-(?P<act>none|relu)$")
LAYER_SYNTAX = "<out_ch|X>-<kernel>-<linear|residual>-<none|relu>"


@dataclass(frozen=True)
class SynthesisLayerSpec:
    out_channels: int
    kernel_size: int
    residual: bool
    relu: bool


def parse_synthesis_layers(layers: str, n_inputs: int, n_outputs: int) -> list[SynthesisLayerSpec]:
    """Parse and validate a layer string; errors name the offending item."""
    if not layers.strip():
        raise ValueError("synthesis layer string is empty")
    specs: list[SynthesisLayerSpec] = []
    in_channels = n_inputs
    for position, item in enumerate(layers.split(","), start=1):
        match = _LAYER.match(item.strip())
        if match is None:
            raise ValueError(f"synthesis layer {position} '{item}' is malformed: expected {LAYER_SYNTAX}")
        out = n_outputs if match["out"] == "X" else int(match["out"])
        kernel = int(match["kernel"])
        if out < 1:
            raise ValueError(f"synthesis layer {position} '{item}' needs at least one output channel")
        if kernel % 2 == 0:
            raise ValueError(f"synthesis layer {position} '{item}' has an even kernel: replicate padding needs it odd")
        residual = match["mode"] == "residual"
        if residual and out != in_channels:
            raise ValueError(
                f"synthesis layer {position} '{item}' is residual but maps {in_channels} to {out} channels"
            )
        specs.append(SynthesisLayerSpec(out, kernel, residual, match["act"] == "relu"))
        in_channels = out
    if in_channels != n_outputs:
        raise ValueError(f"synthesis ends with {in_channels} channels but the frame needs {n_outputs} (use X)")
    return specs


class SynthesisConv(nn.Module):
    """Convolution with replicate padding, optional residual and ReLU."""

    def __init__(self, in_channels: int, spec: SynthesisLayerSpec):
        super().__init__()
        self.spec = spec
        self.weight = nn.Parameter(torch.zeros(spec.out_channels, in_channels, spec.kernel_size, spec.kernel_size))
        self.bias = nn.Parameter(torch.zeros(spec.out_channels))
        self._eval_output: VersionedCache[Tensor] = VersionedCache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Biases 0; residual weights 0 (identity layer); others U(-a, a) with
        a = 1 / (C_out^2 sqrt(C_in k^2)): PyTorch's default bound shrunk by C_out^2."""
        with torch.no_grad():
            self.bias.zero_()
            if self.spec.residual:
                self.weight.zero_()
            else:
                out_ch, in_ch, k, _ = self.weight.shape
                bound = 1.0 / (out_ch**2 * math.sqrt(in_ch * k * k))
                self.weight.uniform_(-bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """During the quantisation search and RDOQ the output is reused while neither the
        input nor this layer's parameters changed (:mod:`coolchic_pl.model.evalcache`)."""
        return self._eval_output.get([x, self.weight, self.bias], lambda: self._convolve(x))

    def _convolve(self, x: Tensor) -> Tensor:
        """1x1 layers run as one matrix product on the [C, H*W] view of the NCHW tensor:
        on CPU this is several times faster than a 1x1 convolution, backward included."""
        batch, in_channels, height, width = x.shape
        if self.spec.kernel_size == 1 and batch == 1:
            source = x.reshape(in_channels, height * width)
            weight = self.weight.view(self.spec.out_channels, in_channels)
            y = torch.addmm(self.bias.view(-1, 1), weight, source)
        else:
            # oneDNN runs these few-channel convolutions about twice as fast (forward and
            # backward) in channels-last layout, conversion included.
            pad = self.spec.kernel_size // 2
            source = x
            padded = F.pad(x, (pad,) * 4, mode="replicate").contiguous(memory_format=torch.channels_last)
            y = F.conv2d(padded, self.weight, self.bias)
        if self.spec.residual:
            y = y + source
        if self.spec.relu:
            # In place on a tensor that is not a view: neither addmm, conv2d nor the
            # residual add needs its output for backward, so no copy is made.
            y = torch.relu_(y)
        return y.view(batch, self.spec.out_channels, height, width)


def synthesis_parameter_counts(n_inputs: int, layers: str, n_outputs: int, stabiliser: bool) -> tuple[int, int]:
    """(weights, biases) of the synthesis a layer string describes, from the string alone: a
    decoder checks them against a file before building anything. The weights are also its
    multiplications per pixel."""
    specs = parse_synthesis_layers(layers, n_inputs, n_outputs)
    in_channels = [n_inputs] + [spec.out_channels for spec in specs[:-1]]
    weights = sum(c * spec.out_channels * spec.kernel_size**2 for c, spec in zip(in_channels, specs))
    biases = sum(spec.out_channels for spec in specs)
    if stabiliser:
        weights, biases = weights + n_inputs * n_outputs, biases + n_outputs
    return weights, biases


class Synthesis(nn.Module):
    """The layer stack, plus Cool-Chic 5's optional parts: a ``stabiliser`` (a linear 1x1
    layer from the latents straight to the outputs, added to the stack's output, which
    keeps early training close to a linear decoder) and a frozen per-output affine map
    ``scale * y + offset`` (:meth:`set_output_range`), which lets a YUV frame whose samples
    span only part of [0, 1] be produced by a network whose outputs start at 0.
    """

    def __init__(self, n_inputs: int, layers: str, n_outputs: int, stabiliser: bool = False):
        super().__init__()
        self.layer_string = layers
        specs = parse_synthesis_layers(layers, n_inputs, n_outputs)
        in_channels = [n_inputs] + [s.out_channels for s in specs[:-1]]
        self.layers = nn.ModuleList(SynthesisConv(c, s) for c, s in zip(in_channels, specs))
        # The leading 1x1 layers that training runs as one chunked node on large frames
        # (:mod:`coolchic_pl.model.pointwise`), and their widest output.
        self.n_pointwise = next((i for i, s in enumerate(specs) if s.kernel_size != 1 or s.residual), len(specs))
        self.pointwise_width = max((s.out_channels for s in specs[:self.n_pointwise]), default=0)
        linear = SynthesisLayerSpec(n_outputs, kernel_size=1, residual=False, relu=False)
        self.stabiliser = SynthesisConv(n_inputs, linear) if stabiliser else None
        self.register_buffer("output_scale", torch.ones(n_outputs, 1, 1))
        self.register_buffer("output_offset", torch.zeros(n_outputs, 1, 1))
        # A Python flag, not a test of the buffers, so the identity costs nothing per step.
        self.has_output_range = False

    @torch.no_grad()
    def set_output_range(self, low: Tensor, high: Tensor) -> None:
        """Per output, map [0, 1] onto [low, high]: not trained, sent with the frame."""
        self.output_scale.copy_((high - low).view_as(self.output_scale))
        self.output_offset.copy_(low.view_as(self.output_offset))
        self.has_output_range = True

    def macs_per_pixel(self) -> int:
        """Multiply-accumulates per synthesis output pixel: sum of C_in C_out k^2."""
        stabiliser = self.stabiliser.weight.numel() if self.stabiliser is not None else 0
        return sum(layer.weight.numel() for layer in self.layers) + stabiliser

    def forward(self, latents: Tensor) -> Tensor:
        x, layers = latents, list(self.layers)
        pixels = latents.shape[-2] * latents.shape[-1]
        if (self.training and self.n_pointwise and latents.shape[0] == 1
                and pixels * self.pointwise_width >= MIN_HIDDEN_FLOATS):
            pointwise, layers = layers[:self.n_pointwise], layers[self.n_pointwise:]
            _, channels, height, width = latents.shape
            x = pointwise_layers(latents.reshape(channels, height * width),
                                 [layer.weight.view(layer.weight.shape[:2]) for layer in pointwise],
                                 [layer.bias for layer in pointwise], [layer.spec.relu for layer in pointwise])
            x = x.view(1, -1, height, width)
        for layer in layers:
            x = layer(x)
        if self.stabiliser is not None:
            x = x + self.stabiliser(latents)
        if self.has_output_range:
            x = torch.addcmul(self.output_offset, x, self.output_scale)
        return x
