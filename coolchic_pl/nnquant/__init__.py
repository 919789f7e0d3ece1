"""Network quantisation: q-step search and exp-Golomb rate (plain functions, no Lightning).

The package exports what a file says of a quantised network (:mod:`.steps`, no torch); the
search is in :mod:`.quantize` and the rate in :mod:`.expgolomb`.
"""

from coolchic_pl.nnquant.steps import EXPGOLOMB_ORDERS, MAX_QUANTIZED_MAGNITUDE, Q_STEPS, ModuleQuantization

__all__ = ["EXPGOLOMB_ORDERS", "MAX_QUANTIZED_MAGNITUDE", "Q_STEPS", "ModuleQuantization"]
