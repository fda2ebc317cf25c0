"""Portable codebooks: golden values, an independent reference implementation, chunking, statistics."""

from __future__ import annotations

import math

import pytest
import torch

from pillow_diffcodec import codebook

# Pinned values of the codeword stream (docs/FORMAT.md). Changing them breaks every existing file.
GOLDEN = {
    (0, 0, 0): [
        1.6790107488632202, -0.4061359763145447, 0.4125806391239166, 0.18259994685649872,
        0.755161464214325, -0.23856987059116364, -0.7149437665939331, -0.395952045917511,
    ],
    (12345, 7, 4095): [
        0.12534251809120178, -1.541469931602478, 0.8300801515579224, 1.3261767625808716,
        1.6164276599884033, -0.06955134868621826, 0.6074193120002747, -1.021441102027893,
    ],
}


def reference_codeword(seed: int, step: int, index: int, numel: int) -> list[float]:
    """docs/FORMAT.md's algorithm in plain Python floats (IEEE double), independent of torch."""

    def mix32(x: int) -> int:
        x &= 0xFFFFFFFF
        x ^= x >> 16
        x = (x * 0x21F0AAAD) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x735A2D97) & 0xFFFFFFFF
        return x ^ (x >> 15)

    key = mix32(mix32(mix32(seed ^ 0x9E3779B9) ^ step) ^ index)
    out = []
    for pair in range((numel + 1) // 2):
        a = mix32(key ^ mix32((2 * pair) ^ 0x85EBCA6B)) ^ 0x80000000  # signed int32 + 2**31
        b = mix32(key ^ mix32((2 * pair + 1) ^ 0x85EBCA6B)) ^ 0x80000000
        radius = math.sqrt(-2.0 * math.log((a + 0.5) * 2.0**-32))
        theta = b * (2.0 * math.pi / 2.0**32)
        out += [radius * math.cos(theta), radius * math.sin(theta)]
    return out[:numel]


@pytest.mark.parametrize("seed, step, index", sorted(GOLDEN))
def test_golden_values(seed: int, step: int, index: int) -> None:
    values = codebook.codewords(seed, step, [index], 8)[0].tolist()
    assert values == GOLDEN[(seed, step, index)]


@pytest.mark.parametrize("seed, step, index", [(0, 0, 0), (1, 2, 3), (2**32 - 1, 4095, 2**20 - 1), (99, 1, 17)])
def test_matches_independent_reference(seed: int, step: int, index: int) -> None:
    got = codebook.codewords(seed, step, [index], 301)[0]
    want = torch.tensor(reference_codeword(seed, step, index, 301), dtype=torch.float64).to(torch.float32)
    assert torch.equal(got, want)


def test_any_codeword_is_computable_alone_and_independent_of_length() -> None:
    block = codebook.codewords(5, 3, list(range(10)), 1000)
    for k in (0, 4, 9):
        assert torch.equal(codebook.codewords(5, 3, [k], 1000)[0], block[k])
    assert torch.equal(codebook.codewords(5, 3, [4], 77)[0], block[4, :77])


def test_codewords_differ_by_seed_step_and_index() -> None:
    base = codebook.codewords(1, 1, [1], 64)[0]
    for other in [(2, 1, 1), (1, 2, 1), (1, 1, 2)]:
        assert not torch.equal(codebook.codewords(other[0], other[1], [other[2]], 64)[0], base)


def test_codewords_are_standard_gaussian_and_nearly_orthogonal() -> None:
    block = codebook.codewords(0, 1, list(range(64)), 4096).to(torch.float64)
    assert abs(block.mean().item()) < 0.01
    assert abs(block.std().item() - 1.0) < 0.01
    kurtosis = (block**4).mean().item()
    assert abs(kurtosis - 3.0) < 0.1
    cosine = (block @ block.T) / 4096
    off_diagonal = cosine - torch.diag(torch.diagonal(cosine))
    assert off_diagonal.abs().max().item() < 5 / math.sqrt(4096)


def test_chunked_scan_equals_unchunked() -> None:
    residuals = torch.randn(3, 500, generator=torch.Generator().manual_seed(0))
    small = codebook.codebook_scores(7, 2, 300, residuals, chunk_elements=700)
    large = codebook.codebook_scores(7, 2, 300, residuals, chunk_elements=10**9)
    full = (codebook.codewords(7, 2, range(300), 500) @ residuals.T).T
    assert torch.allclose(small, large, atol=1e-4) and torch.allclose(small, full, atol=1e-4)
    assert torch.equal(small.argmax(dim=1), full.argmax(dim=1))


def test_scan_recovers_a_planted_codeword() -> None:
    target = codebook.codewords(3, 9, [1234], 2000)
    scores = codebook.codebook_scores(3, 9, 4096, target, chunk_elements=2**14)
    assert int(scores.argmax()) == 1234


@pytest.mark.slow
def test_torch_compile_gives_the_same_values() -> None:
    eager = codebook.codewords(11, 5, list(range(37)), 999)
    codebook.use_torch_compile(True)
    try:
        compiled = codebook.codewords(11, 5, list(range(37)), 999)
    finally:
        codebook.use_torch_compile(False)
    assert torch.equal(eager, compiled)
