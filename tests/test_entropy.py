"""Uniform entropy coding: exact round trips, predictable sizes, near-ideal rates, corrupt payloads."""

from __future__ import annotations

import math
import random

import pytest

from pillow_diffcodec.codecs.ddcm import entropy
from pillow_diffcodec.errors import CorruptFileError, DiffCodecError

ALPHABETS = [2, 3, 7, 1000, 4095, 4096, 65535, 65537, 2**20, 2**24 + 1, math.comb(4096, 64), 10**40]


@pytest.mark.parametrize("pattern", ["random", "max", "zero"])
def test_round_trip_and_size_equals_estimate(pattern: str) -> None:
    rng = random.Random(pattern)
    for _ in range(300):
        sizes = [rng.choice(ALPHABETS + [1, rng.randrange(2, 70000)]) for _ in range(rng.randrange(0, 80))]
        values = [
            {"random": rng.randrange(s), "max": s - 1, "zero": 0}[pattern] for s in sizes
        ]
        payload = entropy.encode_uniform(values, sizes)
        assert len(payload) == entropy.payload_size(sizes)
        assert entropy.decode_uniform(payload, sizes) == values


def test_rate_is_within_a_word_of_the_information_content() -> None:
    sizes = [1000] * 5000  # log2(1000) = 9.966 bits, not the 10 a whole-bit code would spend
    ideal_bytes = 5000 * math.log2(1000) / 8
    size = entropy.payload_size(sizes)
    assert ideal_bytes <= size <= ideal_bytes + 12
    assert size < 5000 * 10 / 8


def test_radices_cover_the_alphabet_with_little_waste() -> None:
    for size in ALPHABETS:
        radices = entropy.radices(size)
        product = math.prod(radices)
        assert product >= size and all(2 <= r <= 2**16 for r in radices if size > 1)
        assert math.log2(product / size) < 1e-4


def test_grouped_size_equals_flat_size() -> None:
    groups = [([4096, 4095, 4094, 8, 8, 8], 37), ([1], 5), ([math.comb(300, 20), 2, 2], 11)]
    flat = [s for sizes, n in groups for _ in range(n) for s in sizes]
    assert entropy.payload_size_grouped(groups) == entropy.payload_size(flat)


def test_corrupt_payloads_raise_library_errors_or_decode_differently() -> None:
    sizes = [4095] * 40 + [3] * 10
    original = [7] * 40 + [2] * 10
    payload = bytearray(entropy.encode_uniform(original, sizes))
    with pytest.raises(CorruptFileError, match="Payload has"):
        entropy.decode_uniform(bytes(payload[:-4]), sizes)
    rng = random.Random(0)
    information = len(payload) // 2  # the leading words carry the coded symbols (the tail may be padding)
    for _ in range(200):
        mutated = bytearray(payload)
        mutated[rng.randrange(information)] ^= 1 << rng.randrange(8)
        try:
            values = entropy.decode_uniform(bytes(mutated), sizes)
        except DiffCodecError as exc:
            assert str(exc)
            continue
        assert values != original  # a flipped bit never goes unnoticed: error or other symbols
