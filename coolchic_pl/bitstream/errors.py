"""The one error a damaged or unsupported bitstream raises."""


class BitstreamError(ValueError):
    """The file is not a valid coolchic_pl bitstream; the message says why, in one line."""
