import math

import pytest
import torch

from coolchic_pl.model.quantizer import QUANTIZER_TYPES, kumaraswamy_noise, quantize, softround


def _softround_by_hand(x: float, t: float) -> float:
    floor = math.floor(x)
    delta = x - floor - 0.5
    return floor + 0.5 + 0.5 * math.tanh(delta / t) / math.tanh(1 / (2 * t))


@pytest.mark.parametrize("x", [-2.7, -1.5, -0.2, 0.0, 0.3, 0.5, 1.49, 3.8])
@pytest.mark.parametrize("t", [0.05, 0.3, 1.0])
def test_softround_matches_formula(x: float, t: float) -> None:
    got = softround(torch.tensor([x], dtype=torch.float64), t).item()
    assert got == pytest.approx(_softround_by_hand(x, t), abs=1e-12)


def test_softround_hand_values() -> None:
    # T = 0.3 at x = 0.25: 0.5 + 0.5 * tanh(-0.25/0.3) / tanh(1/0.6)
    assert softround(torch.tensor([0.25]), 0.3).item() == pytest.approx(0.13363, abs=1e-4)
    # Integers and half-integers are fixed points of softround.
    fixed = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0])
    assert torch.allclose(softround(fixed, 0.3), fixed, atol=1e-6)


def test_softround_tends_to_round_and_identity() -> None:
    x = torch.linspace(-3.4, 3.4, 101, dtype=torch.float64)
    away_from_half = (x - torch.floor(x) - 0.5).abs() > 0.01
    assert torch.allclose(softround(x, 1e-3)[away_from_half], torch.round(x)[away_from_half], atol=1e-6)
    assert torch.allclose(softround(x, 100.0), x, atol=1e-4)


def test_kumaraswamy_noise_range_and_mode() -> None:
    like = torch.empty(400_000)
    for a in (1.0, 2.0, 3.0):
        noise = kumaraswamy_noise(like, a)
        assert noise.min() > -0.5 and noise.max() < 0.5
    uniform = kumaraswamy_noise(like, 1.0)
    assert uniform.mean().abs() < 5e-3 and uniform.var().item() == pytest.approx(1 / 12, rel=0.02)
    histogram = torch.histc(kumaraswamy_noise(like, 2.0), bins=20, min=-0.5, max=0.5)
    assert histogram.argmax().item() in (9, 10)  # mode at 0, i.e. 1/2 before the shift


def test_ste_forward_rounds_backward_follows_softround() -> None:
    x = (torch.randn(1000, dtype=torch.float64) * 3).requires_grad_()
    t = 0.3
    y = quantize(x, "ste", t, "none", 0.0)
    assert torch.equal(y.detach(), torch.round(x.detach()))
    (grad,) = torch.autograd.grad(y.sum(), x)
    x_ref = x.detach().clone().requires_grad_()
    (grad_ref,) = torch.autograd.grad(softround(x_ref, t).sum(), x_ref)
    assert torch.allclose(grad, grad_ref, rtol=1e-10, atol=1e-12)


def test_quantizer_types() -> None:
    x = torch.tensor([0.2, 1.7, -2.6])
    assert torch.equal(quantize(x, "hardround", 0.3, "kumaraswamy", 2.0), torch.round(x))
    assert torch.allclose(quantize(x, "softround_alone", 0.3, "gaussian", 1.0), softround(x, 0.3))
    noisy = quantize(x, "none", 0.3, "kumaraswamy", 1.0)
    assert (noisy - x).abs().max() < 0.5 and not torch.equal(noisy, x)
    assert torch.equal(quantize(x, "none", 0.3, "none", 1.0), x)
    # softround(softround(x) + n): without noise it is softround applied twice.
    assert torch.allclose(quantize(x, "softround", 0.3, "none", 0.0), softround(softround(x, 0.3), 0.3))
    assert set(QUANTIZER_TYPES) == {"softround", "softround_alone", "hardround", "ste", "none"}
    with pytest.raises(ValueError, match="unknown quantizer type"):
        quantize(x, "round", 0.3, "none", 0.0)
    with pytest.raises(ValueError, match="unknown quantizer noise type"):
        quantize(x, "softround", 0.3, "uniform", 0.0)
