"""The image .cool file (:mod:`.codec`) and its parts: no torch, which the decoder never loads."""

from coolchic_pl.bitstream.codec import FORMAT_VERSION, MAGIC, DecodedBitstream, decode_coolchic, encode_coolchic
from coolchic_pl.bitstream.errors import BitstreamError

__all__ = ["FORMAT_VERSION", "MAGIC", "BitstreamError", "DecodedBitstream", "decode_coolchic", "encode_coolchic"]
