"""The .cool bitstream: encoding a quantised CoolChic and decoding it back."""

from coolchic_pl.bitstream.codec import FORMAT_VERSION, MAGIC, DecodedBitstream, decode_coolchic, encode_coolchic
from coolchic_pl.bitstream.errors import BitstreamError

__all__ = ["FORMAT_VERSION", "MAGIC", "BitstreamError", "DecodedBitstream", "decode_coolchic", "encode_coolchic"]
