"""What a file says of a quantised network: the candidate q-steps (the file stores their
indices), the exp-Golomb orders, how a network is coded. Plain data without torch, which
the decoder reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

EXPGOLOMB_ORDERS = tuple(range(13))


def _powers_of_two(first: int) -> tuple[float, ...]:
    return tuple(2.0**k for k in range(first, 1))


# Candidate steps per module (weights, biases), ascending; the bitstream stores indices.
Q_STEPS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "arm": (_powers_of_two(-8), _powers_of_two(-16)),
    "upsampling": (_powers_of_two(-12), (1.0,)),
    "synthesis": (_powers_of_two(-12), _powers_of_two(-24)),
}


NetworkCoding = Literal["own", "delta", "same"]
NETWORK_CODINGS: tuple[NetworkCoding, ...] = ("own", "delta", "same")


# Largest magnitude the entropy coder accepts for one quantised parameter.
MAX_QUANTIZED_MAGNITUDE = 65535


@dataclass
class ModuleQuantization:
    """What the bitstream needs to rebuild one module's parameters, and their rate.

    ``coding`` "own" codes value / step, "delta" (value - predicted value) / step, "same"
    nothing (the predicted values as they are; its steps are then those of the prediction's
    grid). ``source_steps`` is the grid of the predicted values, for the last two."""

    weight_step: float
    bias_step: float
    weight_order: int
    bias_order: int
    rate_bits: int
    coding: NetworkCoding = "own"
    source_steps: Optional[tuple[float, float]] = None

    @property
    def value_steps(self) -> tuple[float, float]:
        """The steps of the grid the module's values lie on (what the integer ARM scales by):
        a difference added to predicted values lies on the finer of the two grids."""
        if self.coding == "own" or self.source_steps is None:
            return self.weight_step, self.bias_step
        return min(self.weight_step, self.source_steps[0]), min(self.bias_step, self.source_steps[1])

    @classmethod
    def same_as(cls, steps: tuple[float, float]) -> "ModuleQuantization":
        """A network sent as the one it is predicted from, whose values lie on the grid of
        ``steps``: no bits."""
        return cls(*steps, 0, 0, 0, "same", tuple(steps))
