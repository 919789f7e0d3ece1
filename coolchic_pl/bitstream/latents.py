"""Range coding of one latent grid: constriction encodes, compiled code decodes.

Symbols are coded in wavefront order: position (y, x) belongs to front x + s*y, where
the slope s makes every causal context position fall in an earlier front. The encoder,
which knows every latent, computes all probabilities in one batch (the ARM of a whole
front depends only on earlier fronts) and codes them in that order; the decoder
(:mod:`coolchic_pl._native`) follows the same order one latent at a time.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import constriction
import numpy as np

from coolchic_pl import _native
from coolchic_pl.bitstream.armint import IntegerArm
from coolchic_pl.bitstream.errors import BitstreamError
from coolchic_pl.bitstream.expgolomb import BitReader, BitWriter
from coolchic_pl.bitstream.laplace_table import (
    ESCAPE_HIGH, ESCAPE_LOW, RESIDUAL_RANGE, ROW_CONSTANTS, interval_bounds, load_rows, model_rows,
)
from coolchic_pl.model.contexts import ContextOrder, context_offsets

# Symbols per constriction call on the encoder side: bounds the [n, ALPHABET] float table.
_ENCODE_CHUNK = 1 << 15


def wavefront_slope(dim_arm: int, order: ContextOrder = "v4") -> int:
    """Smallest s with dx < s * |dy| for every context offset above the current row."""
    ratios = [dx / -dy for dy, dx in context_offsets(dim_arm, order) if dy < 0]
    return max(1, int(np.floor(max(ratios, default=0))) + 1)


class GridPlan(NamedTuple):
    """The coding order of one grid and where its latents' contexts are.

    Both sides code the grid in a zero-bordered copy, wide enough for every causal context,
    so the contexts of the latent at padded position p are p + ``deltas``: no [n, d] index is
    built (a tenth of a second at 768x512)."""

    order: np.ndarray  # flat (unpadded) positions in coding order
    positions: np.ndarray  # the same positions in the padded copy
    deltas: np.ndarray  # [d] offsets of the contexts, in the ARM's input order
    starts: np.ndarray  # start of each front in coding order, then n
    padded_shape: tuple[int, int]
    top: int
    left: int


@functools.lru_cache(maxsize=32)
def grid_plan(height: int, width: int, dim_arm: int, order: ContextOrder = "v4") -> GridPlan:
    """Front f holds the rows y with 0 <= f - s*y < width, top to bottom: the plan follows
    from each front's first row and count, without sorting the grid (a fifth of the time)."""
    offsets = np.array(context_offsets(dim_arm, order)).reshape(-1, 2)
    top = max(0, -offsets[:, 0].min(initial=0))
    left, right = max(0, -offsets[:, 1].min(initial=0)), max(0, offsets[:, 1].max(initial=0))
    padded_width = width + left + right
    slope = wavefront_slope(dim_arm, order)
    fronts = np.arange(width + slope * (height - 1))
    first_row = np.maximum(0, -((width - 1 - fronts) // slope))
    counts = np.minimum(height - 1, fronts // slope) - first_row + 1
    occupied = counts > 0  # a grid narrower than the slope leaves fronts empty
    fronts, first_row, counts = fronts[occupied], first_row[occupied], counts[occupied]
    starts = np.concatenate([[0], np.cumsum(counts)])
    rows = np.arange(starts[-1]) - np.repeat(starts[:-1] - first_row, counts)
    coding_order = rows * width + np.repeat(fronts, counts) - slope * rows
    positions = coding_order + rows * (left + right) + top * padded_width + left
    return GridPlan(coding_order, positions, offsets[:, 0] * padded_width + offsets[:, 1], starts,
                    (height + top, padded_width), top, left)


def _symbols(residuals: np.ndarray) -> np.ndarray:
    return np.clip(residuals + RESIDUAL_RANGE + 1, ESCAPE_LOW, ESCAPE_HIGH).astype(np.int32)


def encode_grid(latents: np.ndarray, arm: IntegerArm, dim_arm: int, context_order: ContextOrder = "v4",
                ifce: np.ndarray | None = None) -> tuple[bytes, bytes]:
    """Integer latents [h, w] -> (range-coded bytes, escape bytes); ``ifce`` holds the grid's
    inter-feature contexts [h * w, f] (from coarser grids), if it has any."""
    encoder, escapes = constriction.stream.queue.RangeEncoder(), BitWriter()
    encode_grid_into(encoder, escapes, latents, arm, dim_arm, context_order, ifce)
    return encoder.get_compressed().astype("<u4").tobytes(), escapes.to_bytes()


def encode_grid_into(encoder: constriction.stream.queue.RangeEncoder, escapes: BitWriter, latents: np.ndarray,
                     arm: IntegerArm, dim_arm: int, context_order: ContextOrder = "v4",
                     ifce: np.ndarray | None = None) -> None:
    """Code a grid with a range coder and an escape writer that may hold other grids before
    it (a video frame codes all its grids with one of each)."""
    plan = grid_plan(*latents.shape, dim_arm, context_order)
    ordered = latents.reshape(-1).astype(np.int64)[plan.order]
    padded = np.zeros(plan.padded_shape, dtype=np.int64).reshape(-1)
    padded[plan.positions] = ordered
    mu, log_scale = arm(padded[plan.positions[:, None] + plan.deltas], None if ifce is None else ifce[plan.order])
    mu_rounded, row = model_rows(mu, log_scale)
    residuals = ordered - mu_rounded
    symbols = _symbols(residuals)
    rows = load_rows()
    model = constriction.stream.model.Categorical(perfect=False)
    for start in range(0, len(ordered), _ENCODE_CHUNK):
        chunk = slice(start, start + _ENCODE_CHUNK)
        encoder.encode(symbols[chunk], model, rows[row[chunk]])
    for residual in residuals[(symbols == ESCAPE_LOW) | (symbols == ESCAPE_HIGH)].tolist():
        escapes.write_expgolomb(abs(residual) - RESIDUAL_RANGE - 1, 0)


class RangeDecoder:
    """The decoding side of constriction's queue ``RangeEncoder`` (32-bit words, 64-bit
    state, 24-bit probabilities, the lazy categorical model), stepped by the compiled grid
    decoder: a frame's grids are decoded from one stream in turn."""

    def __init__(self, coded: bytes):
        if len(coded) % 4:
            raise BitstreamError("a latent stream length is not a whole number of 32-bit words")
        self.words = np.frombuffer(coded, dtype="<u4")
        head = [int(w) for w in self.words[:2]] + [0, 0]
        # constriction's first point: the first two words, zeros for any missing.
        self.state = (min(2, len(self.words)), 0, (1 << 64) - 1, head[0] << 32 | head[1])

    def check_end(self) -> None:
        """constriction's ``maybe_exhausted``: every word read and the point no further from the
        interval's lower end than the encoder's final flush leaves it."""
        word_pos, lower, range_, point = self.state
        flushed = range_ == (1 << 64) - 1 or (point - lower) % (1 << 64) < (1 << 33) - 1
        if word_pos != len(self.words) or not flushed:
            raise BitstreamError("the range-coded latents hold data after their last latent")


class GridIfce(NamedTuple):
    """What the decoder computes a grid's inter-feature contexts from, latent by latent."""

    n_features: int
    weight: np.ndarray  # [n_features, n_inputs] int64, 2^-8 units (no inputs: contexts of 0)
    bias: np.ndarray  # [n_features] int64, 2^-16 units
    flat: np.ndarray  # the decoded latents of every grid, int64, in flat order
    sources: tuple[tuple[int, int, int], ...]  # (start in flat, width, shift), model.ifce.ifce_sources


def decode_grid(coded: bytes, escape_bytes: bytes, height: int, width: int, arm: IntegerArm, dim_arm: int,
                context_order: ContextOrder = "v4", ifce: GridIfce | None = None) -> np.ndarray:
    """Inverse of :func:`encode_grid`."""
    decoder, escapes = RangeDecoder(coded), BitReader(escape_bytes)
    latents = decode_grid_from(decoder, escapes, height, width, arm, dim_arm, context_order, ifce)
    decoder.check_end()
    escapes.check_end("the escape stream")
    return latents


def decode_grid_from(decoder: RangeDecoder, escapes: BitReader, height: int, width: int, arm: IntegerArm,
                     dim_arm: int, context_order: ContextOrder = "v4", ifce: GridIfce | None = None) -> np.ndarray:
    """Inverse of :func:`encode_grid_into`: the next grid of a range decoder and escape reader,
    decoded latent by latent in compiled code (:mod:`coolchic_pl._native`), which follows
    :func:`grid_plan`'s fronts from their closed form."""
    offsets = np.array(context_offsets(dim_arm, context_order), dtype=np.int64).reshape(-1)
    ifce_spec = None if ifce is None else (*ifce[:4], ifce.sources)
    decoded = np.empty((height, width), dtype=np.int64)
    try:
        decoder.state, escapes.position = _native.decode_grid(
            decoder.words, decoder.state, escapes.bits, escapes.position, decoded, height, width,
            wavefront_slope(dim_arm, context_order), offsets, ifce_spec, interval_bounds(), arm.native_tables(),
            ROW_CONSTANTS)
    except ValueError as error:
        raise BitstreamError(str(error)) from None
    return decoded
