"""The one arithmetic of decoding after the latents (docs/bitstream.md, "Integer decoding").

Every value the decoder computes after the latents is an integer number of activation units
of 2^-``FRACTION_BITS``, clamped to +-``ACTIVATION_LIMIT`` units, held in a float64 tensor.
Weights are integer multiples of a power-of-two q-step no finer than 2^-``WEIGHT_BITS``
(biases 2^-``BIAS_BITS``), so a layer's sum of weights times activations, plus its bias in
activation units and the rounding half, is a multiple of 2^-``WEIGHT_BITS``: exact in float64
while its magnitude stays below 2^(53 - WEIGHT_BITS). :func:`check_layer_bound` proves that
from the weights alone (the activations being clamped), so any summation order (threads, BLAS
kernel, GPU) gives the same sum, and the floor that ends every layer the same integer.

Rounding is half up, floor(x + 1/2), everywhere: unlike round-half-to-even it commutes with
adding an integer, which the output sample computation relies on.
"""

from __future__ import annotations

import torch
from torch import Tensor

FRACTION_BITS = 16
UNIT = float(2**FRACTION_BITS)  # activation units per 1.0
ACTIVATION_LIMIT = 4096 * UNIT
WEIGHT_BITS = 12
BIAS_BITS = 24
EXACT_LIMIT = 2.0**53
DTYPE = torch.float64


class ArithmeticBoundError(ValueError):
    """A layer whose weights could make a sum leave float64's exact integer range."""


def round_half_up(x: Tensor) -> Tensor:
    """floor(x + 1/2), element-wise (x already holds exact values)."""
    return torch.floor(x + 0.5)


def rounded_bias(bias: Tensor) -> Tensor:
    """A bias in activation units plus the rounding half: adding it before a floor rounds the
    layer's output half up at no extra pass over the activations."""
    return bias.detach().to(DTYPE) * UNIT + 0.5


def check_layer_bound(weight: Tensor, bias: Tensor | None, what: str) -> float:
    """The largest |sum| a layer can reach, in units of 2^-WEIGHT_BITS, for inputs within
    +-ACTIVATION_LIMIT; raises :class:`ArithmeticBoundError` when it reaches 2^53 or when a
    parameter is off its q-step grid. ``weight`` is [out, ...] with every input of one output
    in its trailing dimensions."""
    weight = weight.detach().to(DTYPE)
    if not torch.equal(torch.round(weight * 2**WEIGHT_BITS), weight * 2**WEIGHT_BITS):
        raise ArithmeticBoundError(f"{what}: a weight is not a multiple of 2^-{WEIGHT_BITS}")
    per_output = weight.abs().reshape(weight.shape[0], -1).sum(1) * ACTIVATION_LIMIT + 0.5
    if bias is not None:
        bias = bias.detach().to(DTYPE)
        if not torch.equal(torch.round(bias * 2**BIAS_BITS), bias * 2**BIAS_BITS):
            raise ArithmeticBoundError(f"{what}: a bias is not a multiple of 2^-{BIAS_BITS}")
        per_output = per_output + bias.abs() * UNIT
    largest = float(per_output.max()) * 2**WEIGHT_BITS
    if largest >= EXACT_LIMIT:
        weight_sum = float(weight.abs().reshape(weight.shape[0], -1).sum(1).max())
        raise ArithmeticBoundError(f"{what}: weights summing to {weight_sum:.0f} in magnitude could leave the exact "
                                   "range of the integer decoder")
    return largest
