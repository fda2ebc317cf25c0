"""Entropy coding of uniform symbols with constriction's range coder, at an exactly predictable size.

Every symbol DDCM writes is uniform over an alphabet known from the codec parameters (an index
among K codewords, a coefficient level, a subset rank among ``binom(K, M)``, a sign). Uniform
symbols are coded with ``constriction.stream.model.Uniform`` in a ``queue.RangeEncoder``
(constriction, Bamler 2022), so an index costs ``log2 K`` bits, not ``ceil(log2 K)``.
Constriction quantises probabilities to 24 bits, which costs up to ``log2(1 + n / 2**24)`` extra
bits for an alphabet of n symbols; alphabets above 2**16 are therefore split into power-of-two low
digits and a top digit in (2**15, 2**16], which keeps the waste below 0.006 bits per symbol.

The range coder's output length varies by up to a word with the data, so the payload is padded
with trailing zero words (which the decoder never needs) to :func:`payload_size`, an upper bound
computed from the alphabets alone: the file size is known before encoding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import constriction
import numpy as np

from ...errors import CorruptFileError, EncodingError, InvalidParameterError

PRECISION_BITS = 24
MAX_UNIFORM_SIZE = 1 << PRECISION_BITS
DIGIT_BITS = 16
MAX_RADIX = 1 << DIGIT_BITS
WORD_BYTES = 4


def radices(size: int) -> list[int]:
    """Digit radices (least significant first) whose product covers every value below ``size``.

    Alphabets up to 2**16 are one digit. Larger ones get power-of-two low digits of at most 16 bits
    and a top digit ``ceil(size / 2**low_bits)`` in (2**15, 2**16], wasting < 2**-15 * 1.45 bits.
    """
    if size < 1:
        raise InvalidParameterError(f"Expected an alphabet size >= 1, got {size}")
    if size <= MAX_RADIX:
        return [size]
    low_bits = (size - 1).bit_length() - DIGIT_BITS
    digits = [MAX_RADIX] * (low_bits // DIGIT_BITS)
    if low_bits % DIGIT_BITS:
        digits.append(1 << (low_bits % DIGIT_BITS))
    return digits + [-(-size >> low_bits)]


def _max_cost_units(radix: int) -> int:
    """Upper bound, in units of 2**-32 bit, of one symbol's cost under constriction's Uniform(radix).

    The smallest quantised probability is ``floor(2**24 / radix) / 2**24``. Integer units make
    sums exact and independent of summation order.
    """
    return math.ceil((PRECISION_BITS - math.log2(MAX_UNIFORM_SIZE // radix)) * 2**32)


def payload_size_grouped(groups: Iterable[tuple[Sequence[int], int]]) -> int:
    """Exact payload length in bytes for ``count`` repetitions of each list of alphabet sizes."""
    units = 0
    for sizes, count in groups:
        units += count * sum(_max_cost_units(r) for size in sizes if size > 1 for r in radices(size))
    if units == 0:
        return 0
    return (-(-units // (32 << 32)) + 1) * WORD_BYTES


def payload_size(sizes: Sequence[int]) -> int:
    """Exact payload length in bytes for symbols from these alphabet sizes."""
    return payload_size_grouped([(sizes, 1)])


def encode_uniform(values: Sequence[int], sizes: Sequence[int]) -> bytes:
    """Code each ``values[i]`` (``0 <= values[i] < sizes[i]``) uniformly; returns ``payload_size(sizes)`` bytes."""
    if len(values) != len(sizes):
        raise EncodingError(f"{len(values)} values for {len(sizes)} alphabets")
    digits: list[int] = []
    flat_radices: list[int] = []
    for value, size in zip(values, sizes):
        if not 0 <= value < size:
            raise EncodingError(f"Symbol {value} outside its alphabet [0, {size})")
        if size == 1:
            continue
        for radix in radices(size):
            digits.append(value % radix)
            flat_radices.append(radix)
            value //= radix
    expected = payload_size(sizes)
    if not digits:
        return b""
    coder = constriction.stream.queue.RangeEncoder()
    coder.encode(
        np.asarray(digits, dtype=np.int32),
        constriction.stream.model.Uniform(),
        np.asarray(flat_radices, dtype=np.int32),
    )
    words = coder.get_compressed()
    padding = expected // WORD_BYTES - len(words)
    if padding < 0:
        raise EncodingError(f"Range coder output of {len(words)} words exceeds the bound of {expected // WORD_BYTES}")
    return np.concatenate([words.astype("<u4"), np.zeros(padding, dtype="<u4")]).tobytes()


def decode_uniform(payload: bytes, sizes: Sequence[int]) -> list[int]:
    """Inverse of :func:`encode_uniform`; raises :class:`CorruptFileError` on inconsistent data."""
    if len(payload) != payload_size(sizes):
        raise CorruptFileError(f"Payload has {len(payload)} bytes; its parameters require {payload_size(sizes)}")
    flat = [r for size in sizes if size > 1 for r in radices(size)]
    if not flat:
        return [0] * len(sizes)
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    try:
        coder = constriction.stream.queue.RangeDecoder(words)
        digits = coder.decode(constriction.stream.model.Uniform(), np.asarray(flat, dtype=np.int32))
    except BaseException as exc:  # constriction raises pyo3's PanicException, a BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise CorruptFileError(f"Entropy-coded payload is corrupt: {exc}") from None
    values: list[int] = []
    position = 0
    for size in sizes:
        if size == 1:
            values.append(0)
            continue
        value, scale = 0, 1
        for radix in radices(size):
            value += int(digits[position]) * scale
            scale *= radix
            position += 1
        if value >= size:
            raise CorruptFileError(f"Decoded symbol {value} is outside its alphabet [0, {size})")
        values.append(value)
    return values
