import math

import pytest
import torch

from coolchic_pl.model.laplace import PROBABILITY_FLOOR, laplace_rate_bits


@pytest.mark.parametrize("mu", [-3.3, 0.0, 0.4, 7.5])
@pytest.mark.parametrize("scale", [0.05, 0.7, 3.0, 40.0])
def test_probabilities_sum_to_one(mu: float, scale: float) -> None:
    y = torch.arange(-2000, 2001, dtype=torch.float64)
    p = torch.exp2(-laplace_rate_bits(y, torch.full_like(y, mu), torch.full_like(y, math.log(scale))))
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


def _rate_by_autograd(y, mu, log_scale):
    def cdf(x):
        return 0.5 - 0.5 * torch.sign(x) * torch.expm1(-x.abs() / torch.exp(log_scale))
    return -torch.log2(torch.clamp_min(cdf(y - mu + 0.5) - cdf(y - mu - 0.5), PROBABILITY_FLOOR))


def test_hand_written_gradient_matches_autograd() -> None:
    torch.manual_seed(1)
    y = (torch.randn(500, dtype=torch.float64) * 4).requires_grad_()
    mu = (torch.randn(500, dtype=torch.float64) * 3).requires_grad_()
    log_scale = (torch.rand(500, dtype=torch.float64) * 9 - 4.6).requires_grad_()
    torch.autograd.gradcheck(laplace_rate_bits, (y, mu, log_scale))
    weights = torch.randn(500, dtype=torch.float64)
    got = torch.autograd.grad((laplace_rate_bits(y, mu, log_scale) * weights).sum(), (y, mu, log_scale))
    want = torch.autograd.grad((_rate_by_autograd(y, mu, log_scale) * weights).sum(), (y, mu, log_scale))
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-9, atol=1e-12)
    # Symbols held at the floor receive no gradient.
    far = torch.tensor([50.0], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(laplace_rate_bits(far, torch.zeros(1, dtype=torch.float64),
                                                    torch.zeros(1, dtype=torch.float64)).sum(), far)
    assert grad.item() == 0.0
