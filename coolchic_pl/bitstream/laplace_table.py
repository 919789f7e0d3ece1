"""The shipped table of discretised Laplace distributions used to range-code latents.

A latent is coded as its residual r = y - round(mu) given two integer indices derived
from the fixed-point ARM: the sub-integer offset of mu (1/16 steps, 17 values) and its
log-scale (bins of 1/16 over the ARM's clamp range, 154 values). For each pair the table
holds integer masses (units of 2^-24, at least 1) of r = -24..24 plus two escape symbols
for the tails, whose excess is then exp-Golomb coded.

The table is computed once with float64 by :func:`generate_table` and shipped as package
data: the coder never evaluates a transcendental function, so encoder and decoder agree
on every machine. ``python -m coolchic_pl.bitstream.laplace_table`` regenerates it.
"""

from __future__ import annotations

import functools
import math
from importlib import resources
from pathlib import Path

import numpy as np

from coolchic_pl.bitstream.armint import ONE, round_shift
from coolchic_pl.model import contexts

MU_STEPS = 16
N_OFFSETS = MU_STEPS + 1
# The ARM's log-scale shift and clamp (log b = clamp(s - 4, -4.6, 5)) in 1/256 units,
# the clamp rounded outward: -1178 and 1280.
LOG_SCALE_SHIFT = round(contexts.LOG_SCALE_SHIFT * ONE)
LOG_SCALE_MIN = math.floor(contexts.LOG_SCALE_MIN * ONE)
LOG_SCALE_MAX = math.ceil(contexts.LOG_SCALE_MAX * ONE)
LOG_SCALE_BIN = 16  # 1/16 in log b
_BIN_BITS = LOG_SCALE_BIN.bit_length() - 1  # a power of two: the division by it is a shift
N_SCALES = (LOG_SCALE_MAX - LOG_SCALE_MIN) // LOG_SCALE_BIN + 1
RESIDUAL_RANGE = 24
ALPHABET = 2 * RESIDUAL_RANGE + 3  # escape-low, -24..24, escape-high
ESCAPE_LOW, ESCAPE_HIGH = 0, ALPHABET - 1
PRECISION_BITS = 24
TABLE_FILE = "laplace_table.npz"
# The decoder's intervals, derived from the table and shipped uncompressed: loading them
# costs a decoder a tenth of computing them from the compressed masses.
BOUNDS_FILE = "laplace_bounds.npy"


def generate_table() -> np.ndarray:
    """[N_OFFSETS, N_SCALES, ALPHABET] uint32 masses, from the Laplace CDF."""
    offsets = (np.arange(N_OFFSETS) - MU_STEPS // 2) / MU_STEPS
    log_scales = (LOG_SCALE_MIN + LOG_SCALE_BIN * np.arange(N_SCALES) + LOG_SCALE_BIN / 2) / ONE
    scales = np.exp(np.minimum(log_scales, LOG_SCALE_MAX / ONE))
    residuals = np.arange(-RESIDUAL_RANGE, RESIDUAL_RANGE + 1)
    x = residuals[None, None, :] - offsets[:, None, None]
    b = scales[None, :, None]

    def cdf(v: np.ndarray) -> np.ndarray:
        return 0.5 - 0.5 * np.sign(v) * np.expm1(-np.abs(v) / b)

    inside = cdf(x + 0.5) - cdf(x - 0.5)
    low = cdf(-RESIDUAL_RANGE - 0.5 - offsets[:, None, None] + 0 * b)
    high = 1.0 - cdf(RESIDUAL_RANGE + 0.5 - offsets[:, None, None] + 0 * b)
    masses = np.concatenate([low, inside, high], axis=2)
    return np.maximum(np.round(masses * 2**PRECISION_BITS), 1).astype(np.uint32)


@functools.lru_cache(maxsize=1)
def load_table() -> np.ndarray:
    with np.load(resources.files("coolchic_pl.bitstream") / TABLE_FILE) as archive:
        return archive["masses"].astype(np.float64)


@functools.lru_cache(maxsize=1)
def load_rows() -> np.ndarray:
    """The table as [N_OFFSETS * N_SCALES, ALPHABET]: row offset * N_SCALES + scale."""
    return load_table().reshape(N_OFFSETS * N_SCALES, ALPHABET)


def quantised_bounds(rows: np.ndarray) -> np.ndarray:
    """[rows, ALPHABET + 1] uint32: symbol s of a row owns [bounds[s], bounds[s + 1]) of the
    range coder's 2^24, as constriction's lazy categorical model quantises the row's masses:
    floor(cumulative mass x (2^24 - ALPHABET) / total) + s, one added per symbol so that none
    is empty, and 2^24 closing the last. The masses are integers, so every cumulative sum is
    exact and the float64 products are those constriction computes."""
    scale = float(2**PRECISION_BITS - ALPHABET) / rows.sum(axis=1, keepdims=True)
    cumulative = np.concatenate([np.zeros((len(rows), 1)), np.cumsum(rows, axis=1)[:, :-1]], axis=1)
    bounds = (cumulative * scale).astype(np.uint32) + np.arange(ALPHABET, dtype=np.uint32)
    closing = np.full((len(rows), 1), 2**PRECISION_BITS, dtype=np.uint32)
    return np.ascontiguousarray(np.concatenate([bounds, closing], axis=1))


@functools.lru_cache(maxsize=1)
def interval_bounds() -> np.ndarray:
    """:func:`quantised_bounds` of the shipped table, as shipped beside it (``BOUNDS_FILE``)."""
    with (resources.files("coolchic_pl.bitstream") / BOUNDS_FILE).open("rb") as file:
        return np.load(file)


# The row's constants folded: the log-scale clamp before its shift, and the offset index's
# MU_STEPS/2 carried into the scale term as MU_STEPS/2 * N_SCALES rows.
_LOW, _HIGH = LOG_SCALE_MIN + LOG_SCALE_SHIFT, LOG_SCALE_MAX + LOG_SCALE_SHIFT
_SCALE_BIAS = MU_STEPS // 2 * N_SCALES * LOG_SCALE_BIN - _LOW


# What the compiled decoder needs of the above (coolchic_pl._native.decode_grid).
ROW_CONSTANTS = (_LOW, _HIGH, _SCALE_BIAS, _BIN_BITS, N_SCALES, N_OFFSETS * N_SCALES, RESIDUAL_RANGE, ALPHABET)


def model_rows(mu: np.ndarray, raw_log_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer ARM outputs (1/256 units) -> (rounded mu, row of :func:`load_rows`), the row
    being offset index * N_SCALES + scale index with offset index = round((mu - rounded mu)
    * MU_STEPS) + MU_STEPS/2 and scale index = (clamp(log scale - shift) - min) //
    LOG_SCALE_BIN. The encoder and the decoder both use it, so they pick the same row."""
    mu_rounded = round_shift(mu, 8)
    scale = (np.minimum(np.maximum(raw_log_scale, _LOW), _HIGH) + _SCALE_BIAS) >> _BIN_BITS
    return mu_rounded, round_shift(mu - (mu_rounded << 8), 4) * N_SCALES + scale


if __name__ == "__main__":
    path = Path(__file__).with_name(TABLE_FILE)
    masses = generate_table()
    np.savez_compressed(path, masses=masses)
    bounds_path = path.with_name(BOUNDS_FILE)
    np.save(bounds_path, quantised_bounds(masses.astype(np.float64).reshape(N_OFFSETS * N_SCALES, ALPHABET)))
    print(f"wrote {path} and {bounds_path}")
