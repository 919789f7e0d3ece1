"""Synthesis: a small convolution stack described by a layer string.

Each comma-separated item is ``<out_ch>-<kernel>-<linear|residual>-<none|relu>``; an
``out_ch`` of ``X`` stands for the number of outputs the frame needs (3 for an image).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coolchic_pl import _native
from coolchic_pl.model.evalcache import VersionedCache
from coolchic_pl.model.layers import SynthesisLayerSpec, parse_synthesis_layers
from coolchic_pl.model.pointwise import MIN_HIDDEN_FLOATS, pointwise_layers


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
        on CPU this is several times faster than a 1x1 convolution, backward included. k x k
        layers of one frame on the CPU in float32 run compiled (:class:`_CompiledConvolution`),
        others through ``conv2d``."""
        batch, in_channels, height, width = x.shape
        if self.spec.kernel_size == 1 and batch == 1:
            source = x.reshape(in_channels, height * width)
            weight = self.weight.view(self.spec.out_channels, in_channels)
            y = torch.addmm(self.bias.view(-1, 1), weight, source)
        elif batch == 1 and x.device.type == "cpu" and x.dtype == torch.float32:
            source = x
            y = _CompiledConvolution.apply(x, self.weight, self.bias)
        else:
            # oneDNN runs these few-channel convolutions about twice as fast (forward and
            # backward) in channels-last layout, conversion included. The output goes back to
            # NCHW: a channels-last activation sends channels-last gradients into the NCHW
            # layers around it, whose products and ReLU backward then take strided paths
            # (measured on the CPU before the compiled layer: synthesis forward and backward
            # 4.9 -> 4.3 ms for mop5 at 192x128, 76 -> 69 ms at 768x512).
            pad = self.spec.kernel_size // 2
            source = x
            padded = F.pad(x, (pad,) * 4, mode="replicate").contiguous(memory_format=torch.channels_last)
            y = F.conv2d(padded, self.weight, self.bias).contiguous()
        if self.spec.residual:
            y = y + source
        if self.spec.relu:
            # In place on a tensor that is not a view: neither addmm, conv2d nor the
            # residual add needs its output for backward, so no copy is made.
            y = torch.relu_(y)
        return y.view(batch, self.spec.out_channels, height, width)


class _CompiledConvolution(torch.autograd.Function):
    """A replicate-padded k x k layer on one [1, C, H, W] frame on the CPU in float32,
    compiled forward and backward (``csrc/convtrain.c``): oneDNN spends most of its time
    outside the arithmetic on these few channels."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        _, channels, height, width = x.shape
        out_channels, _, kernel, _ = weight.shape
        x = x.contiguous()
        spec = (channels, out_channels, kernel, height, width, weight.detach().contiguous().numpy(),
                bias.detach().contiguous().numpy())
        y = x.new_empty(1, out_channels, height, width)
        _native.conv_train_forward(x.detach().numpy(), spec, y.numpy())
        ctx.spec = spec
        ctx.save_for_backward(x, weight, bias)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x, weight, bias = ctx.saved_tensors
        grad_x, grad_weight, grad_bias = torch.empty_like(x), torch.empty_like(weight), torch.empty_like(bias)
        _native.conv_train_backward(x.detach().numpy(), ctx.spec, grad.contiguous().numpy(), grad_x.numpy(),
                                    grad_weight.numpy(), grad_bias.numpy())
        return grad_x, grad_weight, grad_bias


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
