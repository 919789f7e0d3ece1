"""Fixed-point ARM: the probability model of every latent from integer arithmetic only.

The entropy decoder must rebuild exactly the probabilities the encoder used; float ARM
outputs can differ in their last bits between machines, thread counts or batch shapes
and would desynchronise the range decoder. Following Cool-Chic's ``armint``: weights
are held as w * 2^8 and biases as b * 2^16 (exact, since the ARM q-steps are powers of two
down to 2^-8 and 2^-16), contexts as latent * 2^8, and every layer rounds half away from
zero back to 2^8 units. All arithmetic is int64 NumPy, so any evaluation order, batch
split or thread count gives the same integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

FRACTIONAL_BITS = 8
ONE = 1 << FRACTIONAL_BITS


def round_shift(values: np.ndarray, bits: int) -> np.ndarray:
    """values / 2^bits rounded half away from zero, in integers."""
    magnitude = (np.abs(values) + (1 << (bits - 1))) >> bits
    return np.where(values < 0, -magnitude, magnitude)


def _exact_matmul(x: np.ndarray, weight_t: np.ndarray) -> np.ndarray:
    """Integer product through float64 BLAS when every partial sum is an integer below
    2^53 (so any summation order gives the exact result), else through int64."""
    if x.size and np.abs(x).max() < _MAX_EXACT_INPUT:
        return (x.astype(np.float64) @ weight_t).astype(np.int64)
    return x @ weight_t.astype(np.int64)


# |input| < 2^20 and |weight| < 2^26 keep 64-term sums below 2^52: exact in float64.
_MAX_EXACT_INPUT = 1 << 20
_MAX_EXACT_WEIGHT = 1 << 26


@dataclass
class IntegerArm:
    """Hidden layers (W [d, d], b [d]) with residual and ReLU, then the 2-output layer, plus
    Cool-Chic 5's optional stabiliser (a 2-output layer on the input, summed before the
    output's rounding) and IFCE layers (one per IFCE grid, inputs: coarser latents)."""

    hidden_weights: list[np.ndarray]
    hidden_biases: list[np.ndarray]
    output_weight: np.ndarray
    output_bias: np.ndarray
    stabiliser_weight: np.ndarray | None = None
    stabiliser_bias: np.ndarray | None = None
    ifce_weights: list[np.ndarray] = field(default_factory=list)
    ifce_biases: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def from_module(cls, arm: torch.nn.Module, weight_step: float, bias_step: float) -> IntegerArm:
        """From an :class:`~coolchic_pl.model.arm.Arm` whose parameters are quantised."""
        def layers(modules: list[torch.nn.Module]) -> tuple[list[np.ndarray], list[np.ndarray]]:
            weights = [torch.round(m.weight.detach().cpu() / weight_step).to(torch.int64).numpy() for m in modules]
            biases = [torch.round(m.bias.detach().cpu() / bias_step).to(torch.int64).numpy() for m in modules]
            return _fixed_point(weights, biases, weight_step, bias_step)

        hidden_w, hidden_b = layers([*arm.hidden, arm.output])
        stabiliser_w, stabiliser_b = layers([arm.stabiliser] if arm.stabiliser is not None else [])
        ifce_w, ifce_b = layers(list(arm.ifce.layers) if arm.ifce is not None else [])
        return cls(hidden_w[:-1], hidden_b[:-1], hidden_w[-1], hidden_b[-1], (stabiliser_w or [None])[0],
                   (stabiliser_b or [None])[0], ifce_w, ifce_b)

    def __post_init__(self) -> None:
        # Transposed float64 copies for the exact BLAS path.
        self._hidden_t = [w.T.astype(np.float64) for w in self.hidden_weights]
        self._output_t = self.output_weight.T.astype(np.float64)
        self._stabiliser_t = None if self.stabiliser_weight is None else self.stabiliser_weight.T.astype(np.float64)
        self._ifce_t = [w.T.astype(np.float64) for w in self.ifce_weights]

    def ifce_features(self, layer: int, inputs: np.ndarray) -> np.ndarray:
        """[n, n_inputs] coarser latents (integers) -> [n, n_features] contexts in 1/256 units."""
        x = np.asarray(inputs, dtype=np.int64) << FRACTIONAL_BITS
        return round_shift(_exact_matmul(x, self._ifce_t[layer]) + self.ifce_biases[layer], FRACTIONAL_BITS)

    def __call__(self, contexts: np.ndarray, ifce: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """[n, d] latent contexts (integers) and [n, f] IFCE contexts (1/256 units) ->
        (mu, raw log-scale), both in 1/256 units."""
        x = np.asarray(contexts, dtype=np.int64) << FRACTIONAL_BITS
        if ifce is not None:
            x = np.concatenate([x, ifce], axis=1)
        inputs = x
        half = 1 << (FRACTIONAL_BITS - 1)
        for weight_t, bias in zip(self._hidden_t, self.hidden_biases):
            # relu(round(v)) == round(relu(v)) and rounding a non-negative value is a shift.
            acc = _exact_matmul(x, weight_t) + bias + (x << FRACTIONAL_BITS)
            x = (np.maximum(acc, 0) + half) >> FRACTIONAL_BITS
        acc = _exact_matmul(x, self._output_t) + self.output_bias
        if self._stabiliser_t is not None:
            acc = acc + _exact_matmul(inputs, self._stabiliser_t) + self.stabiliser_bias
        out = round_shift(acc, FRACTIONAL_BITS)
        return out[:, 0], out[:, 1]


def _fixed_point(weights: list[np.ndarray], biases: list[np.ndarray], weight_step: float,
                 bias_step: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Integers at the ARM q-steps -> weights in 2^-8 and biases in 2^-16 units."""
    weight_scale = int(round(weight_step * ONE))
    bias_scale = int(round(bias_step * ONE * ONE))
    if weight_scale < 1 or bias_scale < 1:
        raise ValueError("ARM q-steps must be at least 2^-8 (weights) and 2^-16 (biases)")
    w = [np.asarray(x, dtype=np.int64) * weight_scale for x in weights]
    b = [np.asarray(x, dtype=np.int64) * bias_scale for x in biases]
    if any(np.abs(x).max(initial=0) >= _MAX_EXACT_WEIGHT for x in w):
        raise ValueError("ARM weight too large for the fixed-point ARM")
    return w, b
