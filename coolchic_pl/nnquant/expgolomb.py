"""Exp-Golomb code lengths of signed integers, the rate model of the network parameters."""

from __future__ import annotations

import torch
from torch import Tensor

EXPGOLOMB_ORDERS = tuple(range(13))


def expgolomb_bits(values: Tensor, order: int) -> Tensor:
    """Total bits of EG_k(|v|) plus one sign bit per non-zero value.

    EG_k(n) takes 2 floor(log2(n / 2^k + 1)) + k + 1 bits, i.e.
    2 floor(log2(n + 2^k)) - k + 1; frexp gives floor(log2) exactly for integers.
    """
    magnitude = values.abs().to(torch.float64)
    _, exponent = torch.frexp(magnitude + 2.0**order)
    bits = 2 * (exponent - 1) - order + 1 + (magnitude > 0).to(exponent.dtype)
    return bits.sum()


def best_expgolomb_order(values: Tensor) -> tuple[int, int]:
    """(order, bits) minimising the code length over orders 0..12; ties go to the lowest order."""
    if values.numel() == 0:
        return 0, 0
    costs = [int(expgolomb_bits(values, k)) for k in EXPGOLOMB_ORDERS]
    best = min(range(len(costs)), key=costs.__getitem__)
    return EXPGOLOMB_ORDERS[best], costs[best]
