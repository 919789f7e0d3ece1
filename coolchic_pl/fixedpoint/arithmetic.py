"""The one arithmetic of decoding after the latents (docs/bitstream.md, "Integer decoding").

Every value the decoder computes after the latents is an integer number of activation units
of 2^-``FRACTION_BITS``, clamped to +-``ACTIVATION_LIMIT`` units, held in a float64 array.
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

import numpy as np

FRACTION_BITS = 16
UNIT = float(2**FRACTION_BITS)  # activation units per 1.0
ACTIVATION_LIMIT = 4096 * UNIT
WEIGHT_BITS = 12
BIAS_BITS = 24
EXACT_LIMIT = 2.0**53


class ArithmeticBoundError(ValueError):
    """A layer whose weights could make a sum leave float64's exact integer range."""


def rounded_bias(bias: np.ndarray) -> np.ndarray:
    """A bias in activation units plus the rounding half: adding it before a floor rounds the
    layer's output half up at no extra pass over the activations."""
    return np.asarray(bias, dtype=np.float64) * UNIT + 0.5


def _on_grid(values: np.ndarray, bits: int) -> bool:
    scaled = values * 2.0**bits
    return bool(np.array_equal(np.round(scaled), scaled))


def check_layer_bound(weight: np.ndarray, bias: np.ndarray | None, what: str) -> float:
    """The largest |sum| a layer can reach, in units of 2^-WEIGHT_BITS, for inputs within
    +-ACTIVATION_LIMIT; raises :class:`ArithmeticBoundError` when it reaches 2^53 or when a
    parameter is off its q-step grid. ``weight`` is [out, ...] with every input of one output
    in its trailing dimensions."""
    weight = np.asarray(weight, dtype=np.float64)
    if not _on_grid(weight, WEIGHT_BITS):
        raise ArithmeticBoundError(f"{what}: a weight is not a multiple of 2^-{WEIGHT_BITS}")
    weight_sums = np.abs(weight).reshape(weight.shape[0], -1).sum(1)
    per_output = weight_sums * ACTIVATION_LIMIT + 0.5
    if bias is not None:
        bias = np.asarray(bias, dtype=np.float64)
        if not _on_grid(bias, BIAS_BITS):
            raise ArithmeticBoundError(f"{what}: a bias is not a multiple of 2^-{BIAS_BITS}")
        per_output = per_output + np.abs(bias) * UNIT
    largest = float(per_output.max()) * 2**WEIGHT_BITS
    if largest >= EXACT_LIMIT:
        raise ArithmeticBoundError(f"{what}: weights summing to {float(weight_sums.max()):.0f} in magnitude could "
                                   "leave the exact range of the integer decoder")
    return largest
