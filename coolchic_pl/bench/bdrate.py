"""Bjontegaard deltas between two rate-distortion curves.

Method (VCEG-M33): fit log10(rate) as a cubic polynomial of PSNR for each curve (and
PSNR as a cubic of log10(rate) for BD-PSNR), integrate both fits over the interval where
the two curves overlap, and compare the mean values. Overlap rule: the interval is
[max of the two minima, min of the two maxima]; curves that do not overlap have no
Bjontegaard delta (NaN). A long sweep (a classical codec at a dozen qualities) is first
trimmed to the points inside the overlap plus the nearest point on each side, so the
cubic describes the part of the curve being compared.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _trim(x: np.ndarray, y: np.ndarray, low: float, high: float) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(x)
    x, y = x[order], y[order]
    inside = np.flatnonzero((x >= low) & (x <= high))
    below = np.flatnonzero(x < low)
    above = np.flatnonzero(x > high)
    keep = np.concatenate([below[-1:], inside, above[:1]]).astype(int)
    return x[keep], y[keep]


def _mean_difference(x_a: np.ndarray, y_a: np.ndarray, x_b: np.ndarray, y_b: np.ndarray) -> float:
    low, high = max(x_a.min(), x_b.min()), min(x_a.max(), x_b.max())
    if not high > low:
        return math.nan
    integrals = []
    for x, y in ((x_a, y_a), (x_b, y_b)):
        x, y = _trim(x, y, low, high)
        degree = min(3, len(x) - 1)
        antiderivative = np.polyint(np.polyfit(x, y, degree))
        integrals.append((np.polyval(antiderivative, high) - np.polyval(antiderivative, low)) / (high - low))
    return integrals[1] - integrals[0]


def _arrays(rate: Sequence[float], psnr: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    rate, psnr = np.asarray(rate, dtype=np.float64), np.asarray(psnr, dtype=np.float64)
    if rate.shape != psnr.shape or len(rate) < 2 or (rate <= 0).any():
        raise ValueError("a curve needs at least two points with positive rates")
    return np.log10(rate), psnr


def bd_rate(rate_ref: Sequence[float], psnr_ref: Sequence[float], rate_test: Sequence[float],
            psnr_test: Sequence[float]) -> float:
    """Average rate difference of ``test`` against ``ref`` at equal PSNR, in percent
    (negative: ``test`` needs less rate)."""
    log_ref, p_ref = _arrays(rate_ref, psnr_ref)
    log_test, p_test = _arrays(rate_test, psnr_test)
    return (10 ** _mean_difference(p_ref, log_ref, p_test, log_test) - 1) * 100


def bd_psnr(rate_ref: Sequence[float], psnr_ref: Sequence[float], rate_test: Sequence[float],
            psnr_test: Sequence[float]) -> float:
    """Average PSNR difference of ``test`` against ``ref`` at equal rate, in dB."""
    log_ref, p_ref = _arrays(rate_ref, psnr_ref)
    log_test, p_test = _arrays(rate_test, psnr_test)
    return _mean_difference(log_ref, p_ref, log_test, p_test)
