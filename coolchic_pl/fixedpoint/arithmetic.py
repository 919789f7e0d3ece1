"""The one arithmetic of decoding after the latents (docs/bitstream.md, "Integer decoding").

Every value the decoder computes after the latents is a multiple of 2^-``FRACTION_BITS``
clamped to +-``ACTIVATION_LIMIT``, held in a float64 tensor. Weights are integer multiples
of a power-of-two q-step no finer than 2^-``WEIGHT_BITS`` (biases 2^-``BIAS_BITS``), so a
product of an activation and a weight is a multiple of 2^-``PRODUCT_BITS`` and a sum of
such products is exact in float64 as long as its magnitude, counted in those units, stays
below 2^53. :func:`check_layer_bound` proves that from the weights alone (the activations
being clamped), so any summation order (threads, BLAS kernel, GPU) gives the same sum, and
the rounding after every layer then gives the same result everywhere.

Rounding is half up, floor(x + 1/2), in every layer: unlike round-half-to-even it commutes
with adding an integer, which the output sample computation relies on.
"""

from __future__ import annotations

import torch
from torch import Tensor

FRACTION_BITS = 16
ONE = float(2**FRACTION_BITS)
ACTIVATION_LIMIT = 4096.0
WEIGHT_BITS = 12
BIAS_BITS = 24
PRODUCT_BITS = max(FRACTION_BITS + WEIGHT_BITS, BIAS_BITS)
EXACT_LIMIT = 2.0**53
DTYPE = torch.float64


class ArithmeticBoundError(ValueError):
    """A layer whose weights could make a sum leave float64's exact integer range."""


def round_half_up(x: Tensor) -> Tensor:
    """floor(x + 1/2), element-wise (x already holds exact values)."""
    return torch.floor(x + 0.5)


def to_grid(x: Tensor) -> Tensor:
    """Round to the nearest multiple of 2^-FRACTION_BITS (half up) and clamp to the
    activation range: what every layer does to its output."""
    return (round_half_up(x * ONE) / ONE).clamp_(-ACTIVATION_LIMIT, ACTIVATION_LIMIT)


def check_layer_bound(weight: Tensor, bias: Tensor | None, what: str) -> float:
    """The largest |sum| a layer can reach, in units of 2^-PRODUCT_BITS, for inputs within
    +-ACTIVATION_LIMIT; raises :class:`ArithmeticBoundError` when it reaches 2^53 or when a
    parameter is off its q-step grid. ``weight`` is [out, ...] with every input of one output
    in its trailing dimensions."""
    weight = weight.detach().to(DTYPE)
    if not torch.equal(torch.round(weight * 2**WEIGHT_BITS), weight * 2**WEIGHT_BITS):
        raise ArithmeticBoundError(f"{what}: a weight is not a multiple of 2^-{WEIGHT_BITS}")
    per_output = weight.abs().reshape(weight.shape[0], -1).sum(1) * ACTIVATION_LIMIT
    if bias is not None:
        bias = bias.detach().to(DTYPE)
        if not torch.equal(torch.round(bias * 2**BIAS_BITS), bias * 2**BIAS_BITS):
            raise ArithmeticBoundError(f"{what}: a bias is not a multiple of 2^-{BIAS_BITS}")
        per_output = per_output + bias.abs()
    largest = float(per_output.max()) * 2**PRODUCT_BITS
    if largest >= EXACT_LIMIT:
        raise ArithmeticBoundError(f"{what}: weights of magnitude up to {largest / 2**PRODUCT_BITS:.0f} per output "
                                   f"could leave the exact range of the integer decoder")
    return largest
