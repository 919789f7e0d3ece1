"""The compiled decoder (coolchic_pl._native) against the NumPy encoder and constriction."""

from __future__ import annotations

import numpy as np
import pytest

from coolchic_pl.bitstream import BitstreamError
from coolchic_pl.bitstream.expgolomb import BitReader, BitWriter, decode_signed, encode_signed
from coolchic_pl.bitstream.laplace_table import ALPHABET, interval_bounds, load_rows, model_rows, quantised_bounds
from coolchic_pl.bitstream.latents import decode_grid, encode_grid, grid_plan
from test_bitstream import _random_arm


def _spread_latents(seed: int, height: int, width: int) -> np.ndarray:
    """Latents whose spread grows across the grid, from zeros to values that need escapes."""
    rng = np.random.default_rng(seed)
    scales = np.geomspace(0.05, 60.0, height * width).reshape(height, width)
    return np.round(rng.laplace(0.0, scales)).astype(np.int64)


def test_interval_bounds_split_the_range_coder_s_precision_among_every_symbol() -> None:
    """The shipped bounds are those of the shipped masses, and every symbol has room."""
    bounds = interval_bounds()
    np.testing.assert_array_equal(bounds, quantised_bounds(load_rows()))
    assert bounds.dtype == np.uint32 and bounds.flags.c_contiguous
    assert bounds.shape[1] == ALPHABET + 1
    assert (bounds[:, 0] == 0).all() and (bounds[:, -1] == 2**24).all()
    assert (np.diff(bounds.astype(np.int64), axis=1) >= 1).all()


def test_what_constriction_encodes_the_compiled_decoder_decodes_over_many_table_rows() -> None:
    """Latents from near-certain zeros to escapes, through a random integer ARM: the grid
    round-trips, and the round trip used hundreds of distinct probability rows and every symbol."""
    arm = _random_arm(11)
    latents = _spread_latents(12, 61, 83)
    coded, escapes = encode_grid(latents, arm, 16)
    assert len(escapes) > 0
    np.testing.assert_array_equal(decode_grid(coded, escapes, 61, 83, arm, 16), latents)

    plan = grid_plan(61, 83, 16)
    padded = np.zeros(plan.padded_shape, dtype=np.int64).reshape(-1)
    padded[plan.positions] = latents.reshape(-1)[plan.order]
    mu, log_scale = arm(padded[plan.positions[:, None] + plan.deltas])
    mu_rounded, rows = model_rows(mu, log_scale)
    symbols = np.clip(latents.reshape(-1)[plan.order] - mu_rounded + 25, 0, ALPHABET - 1)
    assert len(np.unique(rows)) > 300 and len(np.unique(symbols)) == ALPHABET


@pytest.mark.parametrize("seed", range(3))
def test_damaged_latent_streams_end_in_a_bitstream_error_or_a_decode(seed: int) -> None:
    arm = _random_arm(seed)
    latents = _spread_latents(seed, 23, 31)
    coded, escapes = encode_grid(latents, arm, 16)
    rng = np.random.default_rng(seed)
    outcomes = set()
    for _ in range(200):
        damaged = bytearray(coded)
        damaged[rng.integers(len(damaged))] ^= 1 << int(rng.integers(8))
        cut = int(rng.integers(len(damaged) // 4 + 1)) * 4 if rng.random() < 0.3 else len(damaged)
        try:
            decode_grid(bytes(damaged[:cut]), escapes, 23, 31, arm, 16)
            outcomes.add("decoded")
        except BitstreamError:
            outcomes.add("error")
    assert "error" in outcomes


def test_signed_exp_golomb_reads_what_the_writer_wrote_and_refuses_a_short_stream() -> None:
    values = np.random.default_rng(3).integers(-5000, 5000, 700)
    for order in (0, 3, 9):
        np.testing.assert_array_equal(decode_signed(encode_signed(values, order), len(values), order), values)
    with pytest.raises(BitstreamError, match="ends before its last value"):
        decode_signed(encode_signed(values, 2)[:-20], len(values), 2)
    writer = BitWriter()
    writer.write((1 << 41) - 1, 41)  # a prefix of 41 ones
    with pytest.raises(BitstreamError, match="impossibly long"):
        BitReader(writer.to_bytes() + b"\0" * 8).signed(1)
