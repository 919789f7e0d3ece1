"""Where the ARM looks: the causal context positions of a latent, in the order the MLP
takes them (part of the format), and the clamp of its log-scale output. Plain data, no
torch, so that the decoder reads it without loading the training code."""

from __future__ import annotations

from typing import Literal

# (row offset, first column offset, last column offset) per row, top to bottom. The order
# of the flattened offsets is the order of the MLP inputs and so part of the format.
_PATTERN_ROWS: dict[int, tuple[tuple[int, int, int], ...]] = {
    8: ((-3, 0, 0), (-2, 0, 0), (-1, -1, 1), (0, -3, -1)),
    16: ((-3, 0, 1), (-2, -2, 2), (-1, -3, 2), (0, -3, -1)),
    24: ((-4, 0, 0), (-3, -2, 2), (-2, -3, 3), (-1, -3, 3), (0, -4, -1)),
    32: ((-4, -2, 1), (-3, -3, 3), (-2, -3, 4), (-1, -4, 4), (0, -4, -1)),
}
CONTEXT_PATTERNS: dict[int, tuple[tuple[int, int], ...]] = {
    n: tuple((dy, dx) for dy, first, last in rows for dx in range(first, last + 1))
    for n, rows in _PATTERN_ROWS.items()
}
ARM_CONTEXT_SIZES = tuple(CONTEXT_PATTERNS)

ContextOrder = Literal["v4", "v5"]
# Cool-Chic 5 ranks the 40 causal positions of a 9x9 window (raster order, the current
# latent at index 40) and uses the first n of them: nearest neighbours first.
_V5_PRIORITY = (
    38, 35, 30, 25, 23, 31, 36, 37, 39,
    33, 28, 21, 20, 6, 15, 22, 29, 34,
    32, 18, 12, 10, 5, 9, 14, 19, 27,
    24, 13, 8, 2, 1, 3, 11, 17, 26,
    16, 7, 4, 0,
)
V5_MAX_CONTEXTS = len(_V5_PRIORITY)
_V5_OFFSETS = tuple((window // 9 - 4, window % 9 - 4)
                    for window in sorted(range(V5_MAX_CONTEXTS), key=_V5_PRIORITY.__getitem__))


def context_offsets(dim_arm: int, order: ContextOrder = "v4") -> tuple[tuple[int, int], ...]:
    """(row, column) offsets of the ``dim_arm`` spatial contexts, in MLP input order."""
    if order == "v4":
        if dim_arm not in CONTEXT_PATTERNS:
            raise ValueError(f"ARM context size must be one of {ARM_CONTEXT_SIZES} with the v4 order, got {dim_arm}")
        return CONTEXT_PATTERNS[dim_arm]
    if order != "v5":
        raise ValueError(f"context order must be v4 or v5, got {order!r}")
    if not 1 <= dim_arm <= V5_MAX_CONTEXTS:
        raise ValueError(f"ARM context size must be 1 to {V5_MAX_CONTEXTS} with the v5 order, got {dim_arm}")
    return _V5_OFFSETS[:dim_arm]


# Clamp of the log-scale after its -4 shift: scale in [exp(-4.6), exp(5)] = [0.01, 148].
LOG_SCALE_SHIFT = 4.0
LOG_SCALE_MIN = -4.6
LOG_SCALE_MAX = 5.0
