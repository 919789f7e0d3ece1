"""Rate of integer (or relaxed) latents under a discretised Laplace distribution."""

from __future__ import annotations

import math

import torch
from torch import Tensor

# No symbol may cost more than 16 bits: the entropy coder's tables cannot represent
# smaller probabilities and the training rate must agree with what is coded.
PROBABILITY_FLOOR = 2.0**-16
_LN2 = math.log(2.0)


def laplace_rate_forward(y: Tensor, mu: Tensor, log_scale: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
    """-log2 P(y), P(y) = F(y + 1/2) - F(y - 1/2) floored at 2^-16, F the Laplace CDF, and
    what :func:`laplace_rate_backward` needs.

    F(x) = 1/2 - 1/2 sign(x - mu) expm1(-|x - mu| / b).
    """
    inv_scale = torch.exp(-log_scale)
    upper = y - mu + 0.5
    lower = upper - 1.0
    upper_m1 = torch.expm1(-upper.abs() * inv_scale)
    lower_m1 = torch.expm1(-lower.abs() * inv_scale)
    probability = 0.5 * (torch.sign(lower) * lower_m1 - torch.sign(upper) * upper_m1)
    bits = torch.log2(torch.clamp_min(probability, PROBABILITY_FLOOR)).neg_()
    return bits, (upper, lower, inv_scale, upper_m1, lower_m1, probability)


def laplace_rate_backward(saved: tuple[Tensor, ...], grad_bits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of the rate with respect to y, mu and log(b), written out by hand."""
    upper, lower, inv_scale, upper_m1, lower_m1, probability = saved
    # d(bits)/dP = -1 / (P ln 2), and 0 where the floor holds P constant (threshold_backward
    # is that masking in one vectorised kernel; torch.where with a scalar is many times slower).
    coefficient = torch.ops.aten.threshold_backward(grad_bits / (probability * -_LN2), probability, PROBABILITY_FLOOR)
    upper_exp, lower_exp = upper_m1 + 1.0, lower_m1 + 1.0
    grad_y = coefficient * 0.5 * inv_scale * (upper_exp - lower_exp)
    # dP/d(1/b) = (u e_u - l e_l) / 2 and d(1/b)/d(log b) = -1/b.
    grad_log_scale = coefficient * -0.5 * inv_scale * (upper * upper_exp - lower * lower_exp)
    return grad_y, -grad_y, grad_log_scale


class _LaplaceRate(torch.autograd.Function):
    """The rate with its gradient written out by hand: autograd over the dozen element-wise
    operations of the formula allocates and walks a dozen latent-sized intermediates more in
    each direction, and this runs on every latent at every training step."""

    @staticmethod
    def forward(ctx, y: Tensor, mu: Tensor, log_scale: Tensor) -> Tensor:
        bits, saved = laplace_rate_forward(y, mu, log_scale)
        ctx.save_for_backward(*saved)
        return bits

    @staticmethod
    def backward(ctx, grad_bits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return laplace_rate_backward(ctx.saved_tensors, grad_bits)


def laplace_rate_bits(y: Tensor, mu: Tensor, log_scale: Tensor) -> Tensor:
    """-log2 P(y) per element, in bits; ``log_scale`` is log(b), already clamped."""
    return _LaplaceRate.apply(y, mu, log_scale)
