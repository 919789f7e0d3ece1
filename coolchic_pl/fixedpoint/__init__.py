"""Decoding after the latents in integers: the same samples on every machine (docs/bitstream.md).

NumPy and :mod:`coolchic_pl._native` only; :mod:`.modules` connects the encoder's torch modules."""

from coolchic_pl.fixedpoint.arithmetic import ArithmeticBoundError
from coolchic_pl.fixedpoint.coolchic import IntegerCoolChic, IntegerInterFrame
from coolchic_pl.fixedpoint.samples import check_frame_bounds, frame_samples, sample_planes

__all__ = ["ArithmeticBoundError", "IntegerCoolChic", "IntegerInterFrame", "check_frame_bounds", "frame_samples",
           "sample_planes"]
