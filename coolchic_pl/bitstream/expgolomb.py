"""Bit-level exp-Golomb coding of signed integers (network parameters, latent escapes).

EG_k(n) writes q ones and a zero, q = floor(log2(n / 2^k + 1)), then n + 2^k - 2^(k+q)
on q + k bits; a sign bit (1 = negative) follows every non-zero signed value. The bit count matches
``coolchic_pl.nnquant.expgolomb_bits``, so the file carries exactly the estimated rate
plus at most 7 padding bits per stream.
"""

from __future__ import annotations

import numpy as np

from coolchic_pl import _native
from coolchic_pl.bitstream.errors import BitstreamError

# A prefix longer than this cannot come from a parameter below 2^32: the stream is damaged.
MAX_PREFIX = 40


class BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def write(self, value: int, n_bits: int) -> None:
        self.bits.extend((value >> shift) & 1 for shift in range(n_bits - 1, -1, -1))

    def write_expgolomb(self, magnitude: int, order: int) -> None:
        q = (magnitude + (1 << order)).bit_length() - 1 - order
        self.bits.extend([1] * q)
        self.bits.append(0)
        self.write(magnitude + (1 << order) - (1 << (order + q)), q + order)

    def write_unsigned(self, *values: int) -> None:
        """Unsigned header fields, exp-Golomb order 0 (1 bit for 0, 3 for 1 and 2, ...)."""
        for value in values:
            if value < 0:
                raise ValueError(f"an unsigned field cannot be {value}")
            self.write_expgolomb(value, 0)

    def write_signed(self, *values: int, order: int = 0) -> None:
        """Signed values: exp-Golomb of the magnitude, then a sign bit if non-zero."""
        for value in values:
            self.write_expgolomb(abs(value), order)
            if value:
                self.write(1 if value < 0 else 0, 1)

    def __len__(self) -> int:
        return len(self.bits)

    def to_bytes(self) -> bytes:
        return np.packbits(np.array(self.bits, dtype=np.uint8)).tobytes()


class BitReader:
    def __init__(self, data: bytes):
        self.bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
        self.position = 0

    def read(self, n_bits: int) -> int:
        end = self.position + n_bits
        if end > len(self.bits):
            raise BitstreamError("a bit stream ends before its last value")
        value = 0
        for bit in self.bits[self.position:end]:
            value = (value << 1) | int(bit)
        self.position = end
        return value

    def check_end(self, what: str) -> None:
        """Only the zero padding of the last byte may follow the last value."""
        if len(self.bits) - self.position >= 8 or self.bits[self.position:].any():
            raise BitstreamError(f"{what} holds bits after its last value")

    @property
    def remaining(self) -> int:
        return len(self.bits) - self.position

    def varints(self, count: int) -> list[int]:
        """``count`` unsigned fields (:meth:`BitWriter.write_unsigned`): the bit counterpart of
        a byte reader's varints, so header parsers take either."""
        return [self.read_expgolomb(0) for _ in range(count)]

    def signed(self, count: int, order: int = 0) -> np.ndarray:
        """``count`` values :meth:`BitWriter.write_signed` wrote at ``order`` (read in compiled
        code: a network holds thousands)."""
        values = np.empty(count, dtype=np.int64)
        try:
            self.position = _native.read_signed(self.bits, self.position, count, order, values)
        except ValueError as error:
            raise BitstreamError(str(error)) from None
        return values

    def read_expgolomb(self, order: int) -> int:
        q = 0
        while self.read(1):
            q += 1
            if q > MAX_PREFIX:
                raise BitstreamError("an exp-Golomb prefix is impossibly long")
        return (1 << (order + q)) - (1 << order) + self.read(q + order)


def encode_signed(values: np.ndarray, order: int) -> bytes:
    writer = BitWriter()
    writer.write_signed(*np.asarray(values, dtype=np.int64).tolist(), order=order)
    return writer.to_bytes()


def decode_signed(data: bytes, count: int, order: int, what: str = "a parameter stream") -> np.ndarray:
    """``count`` signed exp-Golomb values that fill ``data`` exactly (but the padding)."""
    reader = BitReader(data)
    values = reader.signed(count, order)
    reader.check_end(what)
    return values
