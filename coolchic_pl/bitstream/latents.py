"""Range coding of one latent grid with constriction, decoded by wavefront.

Symbols are coded in wavefront order: position (y, x) belongs to front x + s*y, where
the slope s makes every causal context position fall in an earlier front. The decoder
can then evaluate the integer ARM for a whole front at once (hundreds of latents per
NumPy call instead of one Python call per latent) and the encoder, which knows every
latent, computes all probabilities in one batch and codes them in the same order.
"""

from __future__ import annotations

import functools

import constriction
import numpy as np

from coolchic_pl.bitstream.armint import IntegerArm
from coolchic_pl.bitstream.errors import BitstreamError
from coolchic_pl.bitstream.expgolomb import BitReader, BitWriter
from coolchic_pl.bitstream.laplace_table import (
    ESCAPE_HIGH, ESCAPE_LOW, RESIDUAL_RANGE, load_rows, load_table, model_indices, model_rows,
)
from coolchic_pl.model.arm import ContextOrder, context_index, context_offsets

# Symbols per constriction call on the encoder side: bounds the [n, ALPHABET] float table.
_ENCODE_CHUNK = 1 << 15


def wavefront_slope(dim_arm: int, order: ContextOrder = "v4") -> int:
    """Smallest s with dx < s * |dy| for every context offset above the current row."""
    ratios = [dx / -dy for dy, dx in context_offsets(dim_arm, order) if dy < 0]
    return max(1, int(np.floor(max(ratios, default=0))) + 1)


@functools.lru_cache(maxsize=32)
def grid_plan(height: int, width: int, dim_arm: int,
              order: ContextOrder = "v4") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(context index [n, d], positions in coding order, start of each front in that order)."""
    index = context_index([(1, height, width)], dim_arm, order).numpy()
    rows, cols = np.divmod(np.arange(height * width), width)
    front = cols + wavefront_slope(dim_arm, order) * rows
    order = np.lexsort((rows, front))
    starts = np.flatnonzero(np.diff(front[order], prepend=-1))
    return index, order, np.append(starts, len(order))


@functools.lru_cache(maxsize=32)
def decoding_plan(height: int, width: int, dim_arm: int,
                  order: ContextOrder = "v4") -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
    """What the decoder needs instead of :func:`grid_plan`'s [n, d] index (slow to build for
    a large grid): the grid is decoded into a zero-bordered copy, wide enough for every causal
    context, so the contexts of a latent at flat position p are p + deltas. Returns (padded
    positions in coding order, deltas [d], start of each front, (padded height, padded width,
    top, left))."""
    offsets = np.array(context_offsets(dim_arm, order)).reshape(-1, 2)
    top = max(0, -offsets[:, 0].min(initial=0))
    left, right = max(0, -offsets[:, 1].min(initial=0)), max(0, offsets[:, 1].max(initial=0))
    padded_width = width + left + right
    rows, cols = np.divmod(np.arange(height * width), width)
    front = cols + wavefront_slope(dim_arm, order) * rows
    coding_order = np.argsort(front * height + rows)
    positions = (rows[coding_order] + top) * padded_width + cols[coding_order] + left
    starts = np.flatnonzero(np.diff(front[coding_order], prepend=-1))
    layout = (height + top, padded_width, top, left)
    return positions, offsets[:, 0] * padded_width + offsets[:, 1], np.append(starts, len(positions)), layout


def _symbols(residuals: np.ndarray) -> np.ndarray:
    return np.clip(residuals + RESIDUAL_RANGE + 1, ESCAPE_LOW, ESCAPE_HIGH).astype(np.int32)


def encode_grid(latents: np.ndarray, arm: IntegerArm, dim_arm: int, context_order: ContextOrder = "v4",
                ifce: np.ndarray | None = None) -> tuple[bytes, bytes]:
    """Integer latents [h, w] -> (range-coded bytes, escape bytes); ``ifce`` holds the grid's
    inter-feature contexts [h * w, f] (from coarser grids), if it has any."""
    height, width = latents.shape
    index, order, _ = grid_plan(height, width, dim_arm, context_order)
    flat = latents.reshape(-1).astype(np.int64)
    mu, log_scale = arm(np.append(flat, 0)[index], ifce)
    mu_rounded, offset, scale = model_indices(mu, log_scale)
    residuals = (flat - mu_rounded)[order]
    symbols = _symbols(residuals)
    offset, scale = offset[order], scale[order]
    table = load_table()
    encoder = constriction.stream.queue.RangeEncoder()
    model = constriction.stream.model.Categorical(perfect=False)
    for start in range(0, len(order), _ENCODE_CHUNK):
        chunk = slice(start, start + _ENCODE_CHUNK)
        encoder.encode(symbols[chunk], model, table[offset[chunk], scale[chunk]])
    escapes = BitWriter()
    for residual in residuals[(symbols == ESCAPE_LOW) | (symbols == ESCAPE_HIGH)].tolist():
        escapes.write_expgolomb(abs(residual) - RESIDUAL_RANGE - 1, 0)
    return encoder.get_compressed().astype("<u4").tobytes(), escapes.to_bytes()


def decode_grid(coded: bytes, escape_bytes: bytes, height: int, width: int, arm: IntegerArm, dim_arm: int,
                context_order: ContextOrder = "v4", ifce: np.ndarray | None = None) -> np.ndarray:
    """Inverse of :func:`encode_grid`, one wavefront at a time."""
    if len(coded) % 4:
        raise BitstreamError("a latent stream length is not a whole number of 32-bit words")
    positions, deltas, starts, (padded_height, padded_width, top, left) = decoding_plan(height, width, dim_arm,
                                                                                        context_order)
    ordered_ifce = None
    if ifce is not None:  # in coding order: rows of the unpadded grid
        ordered_ifce = ifce[(positions // padded_width - top) * width + positions % padded_width - left]
    decoded = np.zeros(padded_height * padded_width, dtype=np.int64)
    rows = load_rows()
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(coded, dtype="<u4").astype(np.uint32))
    model = constriction.stream.model.Categorical(perfect=False)
    escapes = BitReader(escape_bytes)
    for start, end in zip(starts[:-1].tolist(), starts[1:].tolist()):
        where = positions[start:end]
        mu, log_scale = arm(decoded[where[:, None] + deltas], None if ifce is None else ordered_ifce[start:end])
        mu_rounded, row = model_rows(mu, log_scale)
        try:
            residuals = decoder.decode(model, rows[row]) - (RESIDUAL_RANGE + 1)
        except AssertionError:  # constriction's range decoder on data no encoder wrote
            raise BitstreamError("the range-coded latents are invalid for their probability model") from None
        if np.abs(residuals).max() > RESIDUAL_RANGE:
            residuals = residuals.astype(np.int64)
            for i in np.flatnonzero(np.abs(residuals) > RESIDUAL_RANGE).tolist():
                excess = RESIDUAL_RANGE + 1 + escapes.read_expgolomb(0)
                residuals[i] = excess if residuals[i] > 0 else -excess
        decoded[where] = mu_rounded + residuals
    if not decoder.maybe_exhausted():
        raise BitstreamError("the range-coded latents hold data after their last latent")
    escapes.check_end("the escape stream")
    return decoded.reshape(padded_height, padded_width)[top:, left:left + width].copy()


