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

FRACTIONAL_BITS = 8
ONE = 1 << FRACTIONAL_BITS


def round_shift(values: np.ndarray, bits: int) -> np.ndarray:
    """values / 2^bits rounded half away from zero, in integers: (v + 2^(bits-1) - [v < 0]) >> bits,
    which equals -((-v + 2^(bits-1)) >> bits) for negative v, in four array operations."""
    return (values + ((1 << (bits - 1)) - (values < 0))) >> bits


def _exact_matmul(x: np.ndarray, weight_t: np.ndarray) -> np.ndarray:
    """Integer product through float64 BLAS when every partial sum is an integer below
    2^53 (so any summation order gives the exact result), else through int64."""
    if x.size and np.abs(x).max() < _MAX_EXACT_INPUT:
        return (x.astype(np.float64) @ weight_t).astype(np.int64)
    return x @ weight_t.astype(np.int64)


# |input| < 2^20 and |weight| < 2^26 keep 64-term sums below 2^52: exact in float64.
_MAX_EXACT_INPUT = 1 << 20
_MAX_EXACT_WEIGHT = 1 << 26
_EXACT_SUM = 2**53


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
    def from_parameters(cls, arm: dict[str, np.ndarray], weight_step: float, bias_step: float) -> IntegerArm:
        """From the quantised values of an :class:`~coolchic_pl.model.arm.Arm`'s parameters,
        by name (``hidden.0.weight``, ..., as :func:`~coolchic_pl.model.layout.network_shapes`)."""
        def layers(names: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
            weights = [np.round(arm[f"{name}.weight"] / weight_step).astype(np.int64) for name in names]
            biases = [np.round(arm[f"{name}.bias"] / bias_step).astype(np.int64) for name in names]
            return _fixed_point(weights, biases, weight_step, bias_step)

        def numbered(prefix: str) -> list[str]:
            return [f"{prefix}.{i}" for i in range(sum(key.startswith(f"{prefix}.") and key.endswith(".weight")
                                                       for key in arm))]

        hidden_w, hidden_b = layers(numbered("hidden") + ["output"])
        stabiliser_w, stabiliser_b = layers(["stabiliser"] if "stabiliser.weight" in arm else [])
        ifce_w, ifce_b = layers(numbered("ifce.layers"))
        return cls(hidden_w[:-1], hidden_b[:-1], hidden_w[-1], hidden_b[-1], (stabiliser_w or [None])[0],
                   (stabiliser_b or [None])[0], ifce_w, ifce_b)

    def __post_init__(self) -> None:
        # Transposed float64 copies for the exact BLAS path.
        self._hidden_t = [w.T.astype(np.float64) for w in self.hidden_weights]
        self._output_t = self.output_weight.T.astype(np.float64)
        self._stabiliser_t = None if self.stabiliser_weight is None else self.stabiliser_weight.T.astype(np.float64)
        self._ifce_t = [w.T.astype(np.float64) for w in self.ifce_weights]
        # The whole network in float64 when its inputs are small enough for every sum to stay
        # below 2^53 in 2^-8 units (so that it is exact): the residual folded into the hidden
        # weights (x W^T + 2^8 x = x (W^T + 2^8 I)), the division by 2^8 that ends a layer into
        # its weights and biases (exact: powers of two), the rounding half into the hidden
        # biases; the first layer takes the latent contexts unscaled, so its rows for them are
        # not divided. A hidden layer is then a product, a bias, a floor and a ReLU.
        scale = 1.0 / ONE
        self._fast_hidden = [(w.T + ONE * np.eye(w.shape[0], dtype=np.int64)) * scale for w in self.hidden_weights]
        self._fast_hidden_bias = [(b + ONE // 2) * scale for b in self.hidden_biases]
        self._fast_output = self.output_weight.T * scale
        self._fast_output_bias = self.output_bias * scale
        self._fast_stabiliser = None if self.stabiliser_weight is None else self.stabiliser_weight.T * scale
        self._fast_stabiliser_bias = None if self.stabiliser_bias is None else self.stabiliser_bias * scale
        self._fast_input_limit = self._largest_exact_input()
        self._native: tuple | None = None
        self._first_layer_cache: dict[int, tuple[np.ndarray | None, np.ndarray, np.ndarray | None]] = {}

    def native_tables(self) -> tuple:
        """The network as :func:`coolchic_pl._native.decode_grid` takes it: width, depth, the
        float64 path's bound, then its folded weights ([in, out]) and the int64 weights ([out, in])."""
        if self._native is None:
            empty_float, empty_int = np.zeros(0), np.zeros(0, dtype=np.int64)

            def flat(arrays: list[np.ndarray], dtype: type) -> np.ndarray:
                return np.ascontiguousarray(np.concatenate([np.asarray(a, dtype).reshape(-1) for a in arrays])
                                            if arrays else np.zeros(0, dtype))

            stabilised = self.stabiliser_weight is not None
            self._native = (
                self.output_weight.shape[1], len(self.hidden_weights), float(self._fast_input_limit),
                flat(self._fast_hidden, np.float64), flat(self._fast_hidden_bias, np.float64),
                flat([self._fast_output], np.float64), flat([self._fast_output_bias], np.float64),
                flat([self._fast_stabiliser], np.float64) if stabilised else empty_float,
                flat([self._fast_stabiliser_bias], np.float64) if stabilised else empty_float,
                flat(self.hidden_weights, np.int64), flat(self.hidden_biases, np.int64),
                flat([self.output_weight], np.int64), flat([self.output_bias], np.int64),
                flat([self.stabiliser_weight], np.int64) if stabilised else empty_int,
                flat([self.stabiliser_bias], np.int64) if stabilised else empty_int)
        return self._native

    def _largest_exact_input(self) -> float:
        """The largest input magnitude (1/256 units) for which no sum of the float64 path
        reaches 2^53 in 2^-8 units, by bisection on the layer-by-layer bound (which grows with it)."""
        def exact(magnitude: float) -> bool:
            largest = magnitude
            for weight_t, bias in zip(self._fast_hidden, self._fast_hidden_bias):
                total = (np.abs(weight_t).sum(0).max(initial=0) * largest + np.abs(bias).max(initial=0)) * ONE
                if total >= _EXACT_SUM:
                    return False
                largest = total / ONE + 1
            total = np.abs(self._fast_output).sum(0).max() * largest + np.abs(self._fast_output_bias).max()
            if self._fast_stabiliser is not None:
                total += (np.abs(self._fast_stabiliser).sum(0).max() * magnitude
                          + np.abs(self._fast_stabiliser_bias).max())
            return total * ONE < _EXACT_SUM

        low, high = 0.0, float(_EXACT_SUM)
        for _ in range(64):
            middle = (low + high) / 2
            low, high = (middle, high) if exact(middle) else (low, middle)
        return low

    def ifce_features(self, layer: int, inputs: np.ndarray) -> np.ndarray:
        """[n, n_inputs] coarser latents (integers) -> [n, n_features] contexts in 1/256 units."""
        x = np.asarray(inputs, dtype=np.int64) << FRACTIONAL_BITS
        return round_shift(_exact_matmul(x, self._ifce_t[layer]) + self.ifce_biases[layer], FRACTIONAL_BITS)

    def __call__(self, contexts: np.ndarray, ifce: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """[n, d] latent contexts (integers, any numeric dtype) and [n, f] IFCE contexts (1/256
        units) -> (mu, raw log-scale), both int64 in 1/256 units. Float64 arithmetic when the
        inputs allow it (:meth:`_largest_exact_input`), int64 otherwise: the same integers."""
        x = np.asarray(contexts, dtype=np.float64)
        n_contexts = x.shape[1]
        limit = self._fast_input_limit / ONE  # x in latent units...
        if ifce is not None:  # ... or, beside IFCE contexts, all in 1/256 units
            x = np.concatenate([x * ONE, ifce], axis=1)
            limit = self._fast_input_limit
        if x.size and np.abs(x).max() > limit:
            exact = np.asarray(contexts, dtype=np.int64) << FRACTIONAL_BITS
            return self._int64_call(exact if ifce is None else np.concatenate([exact, ifce], axis=1))
        first_layer = self._first_layers(n_contexts if ifce is None else 0)
        inputs = x
        for index, (weight_t, bias) in enumerate(zip(self._fast_hidden, self._fast_hidden_bias)):
            x = x @ (first_layer[0] if index == 0 else weight_t)
            x += bias
            np.floor(x, out=x)
            np.maximum(x, 0.0, out=x)
        acc = x @ (first_layer[1] if not self._fast_hidden else self._fast_output)
        acc += self._fast_output_bias
        if self._fast_stabiliser is not None:
            acc += inputs @ first_layer[2]
            acc += self._fast_stabiliser_bias
        magnitude = np.abs(acc)
        magnitude += 0.5
        np.floor(magnitude, out=magnitude)
        out = np.copysign(magnitude, acc).astype(np.int64)
        return out[:, 0], out[:, 1]

    def _first_layers(self, n_unscaled: int) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
        """The weights that read the inputs (first hidden layer, or the output layer of an ARM
        without one; the stabiliser), with their first ``n_unscaled`` rows (contexts given as
        integers rather than 1/256 units) multiplied back by 2^8."""
        if n_unscaled in self._first_layer_cache:
            return self._first_layer_cache[n_unscaled]

        def unscaled(weight_t: np.ndarray | None) -> np.ndarray | None:
            if weight_t is None:
                return None
            weight_t = weight_t.copy()
            weight_t[:n_unscaled] *= ONE
            return weight_t

        hidden = unscaled(self._fast_hidden[0]) if self._fast_hidden else None
        output = self._fast_output if self._fast_hidden else unscaled(self._fast_output)
        layers = self._first_layer_cache[n_unscaled] = (hidden, output, unscaled(self._fast_stabiliser))
        return layers

    def _int64_call(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network in int64 (through float64 BLAS where a layer's inputs allow)."""
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
