"""Exp-Golomb code lengths of signed integers, the rate model of the network parameters."""

from __future__ import annotations

import torch
from torch import Tensor

from coolchic_pl.nnquant.steps import EXPGOLOMB_ORDERS



def expgolomb_bits(values: Tensor, order: int) -> Tensor:
    """Total bits of EG_k(|v|) plus one sign bit per non-zero value.

    EG_k(n) takes 2 floor(log2(n / 2^k + 1)) + k + 1 bits, i.e.
    2 floor(log2(n + 2^k)) - k + 1; frexp gives floor(log2) exactly for integers.
    """
    magnitude = values.abs().to(torch.float64)
    _, exponent = torch.frexp(magnitude + 2.0**order)
    bits = 2 * (exponent - 1) - order + 1 + (magnitude > 0).to(exponent.dtype)
    return bits.sum()


def expgolomb_length(value: int, order: int) -> int:
    """Bits of one signed integer, as :func:`expgolomb_bits` counts them, in integer
    arithmetic: RDOQ prices one parameter at a time, where a tensor costs more than the sum."""
    magnitude = abs(value)
    return 2 * ((magnitude + (1 << order)).bit_length() - 1) - order + 1 + (magnitude != 0)


def best_expgolomb_order(values: Tensor) -> tuple[int, int]:
    """(order, bits) minimising the code length over orders 0..12; ties go to the lowest order.

    All orders are costed in one broadcast [n, orders] computation: the q-step search calls
    this for every candidate step, and thirteen separate passes were a quarter of its time.
    """
    if values.numel() == 0:
        return 0, 0
    orders = torch.tensor(EXPGOLOMB_ORDERS, dtype=torch.float64, device=values.device)
    magnitude = values.detach().abs().to(torch.float64).reshape(-1, 1)
    _, exponent = torch.frexp(magnitude + torch.exp2(orders))
    costs = (2 * (exponent - 1) + (magnitude > 0)).sum(dim=0) - values.numel() * (orders - 1)
    best = int(torch.argmin(costs))  # the first minimum: the lowest order
    return EXPGOLOMB_ORDERS[best], int(costs[best])
