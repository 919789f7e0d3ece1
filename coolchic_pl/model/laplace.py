"""Rate of integer (or relaxed) latents under a discretised Laplace distribution."""

from __future__ import annotations

import math

import torch
from torch import Tensor

# No symbol may cost more than 16 bits: the entropy coder's tables cannot represent
# smaller probabilities and the training rate must agree with what is coded.
PROBABILITY_FLOOR = 2.0**-16
_INV_LN2 = 1.0 / math.log(2.0)


def laplace_cdf(x: Tensor, inv_scale: Tensor) -> Tensor:
    """CDF of a zero-mean Laplace at ``x``, written with expm1 for accuracy near 0."""
    return 0.5 - 0.5 * torch.sign(x) * torch.expm1(-x.abs() * inv_scale)


def laplace_probability(y: Tensor, mu: Tensor, log_scale: Tensor) -> Tensor:
    """P(y) = F(y + 1/2) - F(y - 1/2), floored at 2^-16."""
    inv_scale = torch.exp(-log_scale)
    centred = y - mu
    probability = laplace_cdf(centred + 0.5, inv_scale) - laplace_cdf(centred - 0.5, inv_scale)
    return torch.clamp_min(probability, PROBABILITY_FLOOR)


def laplace_rate_bits(y: Tensor, mu: Tensor, log_scale: Tensor) -> Tensor:
    """-log2 P(y) per element, in bits; ``log_scale`` is log(b), already clamped."""
    return torch.log(laplace_probability(y, mu, log_scale)).mul_(-_INV_LN2)
