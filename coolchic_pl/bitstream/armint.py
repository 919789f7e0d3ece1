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

from dataclasses import dataclass

import numpy as np

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
    """Hidden layers (W [d, d], b [d]) with residual and ReLU, then the 2-output layer."""

    hidden_weights: list[np.ndarray]
    hidden_biases: list[np.ndarray]
    output_weight: np.ndarray
    output_bias: np.ndarray

    @classmethod
    def from_quantized(cls, weights: list[np.ndarray], biases: list[np.ndarray], weight_step: float,
                       bias_step: float) -> IntegerArm:
        """From the transmitted integers (parameter = integer * step), layer by layer."""
        weight_scale = int(round(weight_step * ONE))
        bias_scale = int(round(bias_step * ONE * ONE))
        if weight_scale < 1 or bias_scale < 1:
            raise ValueError("ARM q-steps must be at least 2^-8 (weights) and 2^-16 (biases)")
        w = [np.asarray(x, dtype=np.int64) * weight_scale for x in weights]
        b = [np.asarray(x, dtype=np.int64) * bias_scale for x in biases]
        if any(np.abs(x).max(initial=0) >= _MAX_EXACT_WEIGHT for x in w):
            raise ValueError("ARM weight too large for the fixed-point ARM")
        return cls(w[:-1], b[:-1], w[-1], b[-1])

    def __post_init__(self) -> None:
        # Transposed float64 copies for the exact BLAS path.
        self._hidden_t = [w.T.astype(np.float64) for w in self.hidden_weights]
        self._output_t = self.output_weight.T.astype(np.float64)

    def __call__(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[n, d] latent contexts (integers) -> (mu, raw log-scale), both in 1/256 units."""
        x = np.asarray(contexts, dtype=np.int64) << FRACTIONAL_BITS
        half = 1 << (FRACTIONAL_BITS - 1)
        for weight_t, bias in zip(self._hidden_t, self.hidden_biases):
            # relu(round(v)) == round(relu(v)) and rounding a non-negative value is a shift.
            acc = _exact_matmul(x, weight_t) + bias + (x << FRACTIONAL_BITS)
            x = (np.maximum(acc, 0) + half) >> FRACTIONAL_BITS
        out = round_shift(_exact_matmul(x, self._output_t) + self.output_bias, FRACTIONAL_BITS)
        return out[:, 0], out[:, 1]
