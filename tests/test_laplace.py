import math

import pytest
import torch

from coolchic_pl.model.laplace import PROBABILITY_FLOOR, laplace_probability, laplace_rate_bits


@pytest.mark.parametrize("mu", [-3.3, 0.0, 0.4, 7.5])
@pytest.mark.parametrize("scale", [0.05, 0.7, 3.0, 40.0])
def test_probabilities_sum_to_one(mu: float, scale: float) -> None:
    y = torch.arange(-2000, 2001, dtype=torch.float64)
    p = laplace_probability(y, torch.full_like(y, mu), torch.full_like(y, math.log(scale)))
    floored = (p == PROBABILITY_FLOOR).sum().item()
    # Unfloored mass is 1; the floor adds at most 2^-16 for each symbol it lifts.
    assert 1.0 - 1e-9 <= p.sum().item() <= 1.0 + floored * PROBABILITY_FLOOR + 1e-9
    assert p.min().item() >= PROBABILITY_FLOOR


def test_floor_caps_rate_at_16_bits() -> None:
    y = torch.tensor([100.0, -60.0])
    bits = laplace_rate_bits(y, torch.zeros(2), torch.full((2,), math.log(0.5)))
    assert torch.allclose(bits, torch.full((2,), 16.0))


def test_rate_matches_closed_form() -> None:
    # For |y - mu| >= 1/2, P = exp(-(|d| - 1/2)/b) * (1 - exp(-1/b)) / 2.
    b, mu, y = 1.3, 0.2, 3.0
    d = abs(y - mu)
    p = math.exp(-(d - 0.5) / b) * (1 - math.exp(-1 / b)) / 2
    bits = laplace_rate_bits(torch.tensor([y], dtype=torch.float64), torch.tensor([mu], dtype=torch.float64),
                             torch.tensor([math.log(b)], dtype=torch.float64))
    assert bits.item() == pytest.approx(-math.log2(p), rel=1e-10)
