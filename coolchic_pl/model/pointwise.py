"""The synthesis's leading 1x1 layers in training as one autograd node, in chunks of pixels.

Those layers are the widest tensors of a step (hop5: 48 channels at every pixel, 75 MB at
768x512), and autograd keeps each for the backward pass. Here the forward pass keeps only
its input, both passes walk the pixels in chunks whose hidden layers stay in the cache, and
the backward pass recomputes a chunk's hidden layers before differentiating it by hand, as
:mod:`coolchic_pl.model.armrate` does for the ARM. The evaluation path keeps
:class:`~coolchic_pl.model.synthesis.SynthesisConv`'s layer-by-layer forward.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

# Pixels per chunk: a 48-channel hidden layer of 8192 pixels is 1.5 MB.
CHUNK_PIXELS = 8192
# Below this many floats in the widest hidden layer (8 MB), autograd's layer-by-layer
# backward is as fast or faster (measured: mop5 at 192x128 4.2 ms against 4.7 chunked, at
# 256x256 even; hop5 at 256x256 17.9 against 17.5, at 768x512 139 against 105).
MIN_HIDDEN_FLOATS = 1 << 21


def pointwise_layers(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], relus: Sequence[bool]) -> Tensor:
    """``x`` [C, P] through the linear layers y = W x + b (then ReLU where ``relus`` says):
    [C_out, P]. Weights are [out, in] matrices."""
    return _Pointwise.apply(tuple(relus), x, *weights, *biases)


def _hidden(x: Tensor, weights: Sequence[Tensor], biases: Sequence[Tensor], relus: Sequence[bool]) -> list[Tensor]:
    """Every layer's input, then the last layer's output."""
    activations = [x]
    for weight, bias, relu in zip(weights, biases, relus):
        y = torch.addmm(bias.unsqueeze(1), weight, activations[-1])
        activations.append(torch.relu_(y) if relu else y)
    return activations


class _Pointwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, relus: tuple[bool, ...], x: Tensor, *parameters: Tensor) -> Tensor:
        n = len(relus)
        weights, biases = parameters[:n], parameters[n:]
        out = x.new_empty(weights[-1].shape[0], x.shape[1])
        for start in range(0, x.shape[1], CHUNK_PIXELS):
            out[:, start:start + CHUNK_PIXELS] = _hidden(x[:, start:start + CHUNK_PIXELS], weights, biases, relus)[-1]
        ctx.relus = relus
        ctx.save_for_backward(x, out, *parameters)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        relus = ctx.relus
        n = len(relus)
        x, out, *parameters = ctx.saved_tensors
        weights, biases = parameters[:n], parameters[n:]
        grad_x = torch.empty_like(x)
        grad_weights = [torch.zeros_like(w) for w in weights]
        grad_biases = [torch.zeros_like(b) for b in biases]
        for start in range(0, x.shape[1], CHUNK_PIXELS):
            end = start + CHUNK_PIXELS
            activations = _hidden(x[:, start:end], weights[:-1], biases[:-1], relus[:-1])
            activations.append(out[:, start:end])
            grad = grad_out[:, start:end]
            for k in range(n - 1, -1, -1):
                if relus[k]:
                    grad = torch.ops.aten.threshold_backward(grad, activations[k + 1], 0.0)
                grad_weights[k].addmm_(grad, activations[k].t())
                grad_biases[k].add_(grad.sum(dim=1))
                grad = weights[k].t() @ grad
            grad_x[:, start:end] = grad
        return None, grad_x, *grad_weights, *grad_biases
