"""Decoding after the latents in integers: the same samples on every machine (docs/bitstream.md)."""

from coolchic_pl.fixedpoint.arithmetic import ArithmeticBoundError
from coolchic_pl.fixedpoint.samples import check_decoder_bounds, decoded_inter_frame, decoded_planes, decoded_samples

__all__ = ["ArithmeticBoundError", "check_decoder_bounds", "decoded_inter_frame", "decoded_planes", "decoded_samples"]
