"""Latent quantisers and the noises that stand in for rounding during training.

Rounding has no useful gradient, so training replaces it by differentiable proxies
(softround, additive noise, or a straight-through estimator); evaluation always
hard-rounds, because that is what the bitstream carries.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

QuantizerType = Literal["softround", "softround_alone", "hardround", "ste", "none"]
NoiseType = Literal["kumaraswamy", "gaussian", "none"]
QUANTIZER_TYPES: tuple[QuantizerType, ...] = ("softround", "softround_alone", "hardround", "ste", "none")
NOISE_TYPES: tuple[NoiseType, ...] = ("kumaraswamy", "gaussian", "none")

# Keeps 1 - u away from 1 so that Kumaraswamy noise never reaches -0.5 exactly.
_UNIFORM_EPS = 1e-7


def softround(x: Tensor, temperature: Tensor | float) -> Tensor:
    """Differentiable rounding: identity-like for large temperatures, round() as T -> 0."""
    floor = torch.floor(x)
    delta = x - floor - 0.5
    temperature = torch.as_tensor(temperature, dtype=x.dtype, device=x.device)
    return floor + 0.5 + 0.5 * torch.tanh(delta / temperature) / torch.tanh(0.5 / temperature)


class _StraightThroughSoftround(torch.autograd.Function):
    """Forward: exact round(); backward: derivative of softround at the same temperature.

    Written as a Function rather than ``soft + (round - soft).detach()`` so that the forward
    value is exactly an integer (the detach trick can be off by an ulp).
    """

    @staticmethod
    def forward(ctx, x: Tensor, temperature: Tensor) -> Tensor:
        ctx.save_for_backward(x, temperature)
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        x, temperature = ctx.saved_tensors
        delta = x - torch.floor(x) - 0.5
        tanh = torch.tanh(delta / temperature)
        slope = 0.5 * (1.0 - tanh * tanh) / (temperature * torch.tanh(0.5 / temperature))
        return grad * slope, None


def kumaraswamy_noise(like: Tensor, a: Tensor | float) -> Tensor:
    """Noise in (-0.5, 0.5) from a Kumaraswamy(a, b) law whose mode is fixed at 1/2.

    b = (2^a (a - 1) + 1) / a places the mode at the centre; a = 1 gives uniform noise and
    larger a concentrates the noise around 0.
    """
    a = torch.as_tensor(a, dtype=like.dtype, device=like.device)
    b = (torch.pow(2.0, a) * (a - 1.0) + 1.0) / a
    u = torch.rand_like(like).clamp_(min=_UNIFORM_EPS)
    return torch.pow(1.0 - torch.pow(1.0 - u, 1.0 / b), 1.0 / a) - 0.5


def draw_noise(like: Tensor, noise_type: NoiseType, noise_parameter: Tensor | float) -> Tensor | None:
    if noise_type == "kumaraswamy":
        return kumaraswamy_noise(like, noise_parameter)
    if noise_type == "gaussian":
        return torch.randn_like(like) * noise_parameter
    if noise_type == "none":
        return None
    raise ValueError(f"unknown quantizer noise type '{noise_type}', expected one of {NOISE_TYPES}")


def quantize(
    x: Tensor,
    quantizer_type: QuantizerType,
    temperature: Tensor | float,
    noise_type: NoiseType,
    noise_parameter: Tensor | float,
) -> Tensor:
    """Apply a training-time quantiser to ``x`` (the gained latents).

    ``softround`` is softround(softround(x) + noise) as in C3; ``ste`` rounds in the forward
    and back-propagates softround's slope; ``none`` is pure additive noise.
    """
    if quantizer_type == "hardround":
        return torch.round(x)
    if quantizer_type == "ste":
        return _StraightThroughSoftround.apply(x, torch.as_tensor(temperature, dtype=x.dtype, device=x.device))
    if quantizer_type == "softround_alone":
        return softround(x, temperature)
    if quantizer_type == "softround":
        noise = draw_noise(x, noise_type, noise_parameter)
        soft = softround(x, temperature)
        return softround(soft if noise is None else soft + noise, temperature)
    if quantizer_type == "none":
        noise = draw_noise(x, noise_type, noise_parameter)
        return x if noise is None else x + noise
    raise ValueError(f"unknown quantizer type '{quantizer_type}', expected one of {QUANTIZER_TYPES}")
