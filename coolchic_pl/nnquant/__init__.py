"""Network quantisation: q-step search and exp-Golomb rate (plain functions, no Lightning)."""

from coolchic_pl.nnquant.expgolomb import EXPGOLOMB_ORDERS, best_expgolomb_order, expgolomb_bits
from coolchic_pl.nnquant.quantize import (
    MAX_QUANTIZED_MAGNITUDE, Q_STEPS, ModuleQuantization, network_rate_bits, quantize_networks,
)

__all__ = [
    "EXPGOLOMB_ORDERS", "MAX_QUANTIZED_MAGNITUDE", "Q_STEPS", "ModuleQuantization",
    "best_expgolomb_order", "expgolomb_bits", "network_rate_bits", "quantize_networks",
]
