"""Portable codebooks: golden values, an independent reference implementation, chunking, statistics."""

from __future__ import annotations

import math

import pytest
import torch

from pillow_diffcodec import codebook

# Pinned values of the codeword stream (docs/FORMAT.md). Changing them breaks every existing file.
GOLDEN = {
    (0, 0, 0, 0): [
        -0.6160711050033569, -0.4955463707447052, -1.8205896615982056, -0.6445456147193909,
        -0.5388535857200623, -1.0833452939987183, 1.8087002038955688, 1.0096889734268188,
    ],
    (12345, 7, 3, 4095): [
        1.8287639617919922, 0.8539557456970215, -0.9375638961791992, -0.7843907475471497,
        0.8963205218315125, -0.14802590012550354, -0.9831849336624146, 1.2028008699417114,
    ],
}


def reference_codeword(seed: int, step: int, tile: int, index: int, numel: int) -> list[float]:
    """docs/FORMAT.md's algorithm in plain Python floats (IEEE double), independent of torch."""

    def mix32(x: int) -> int:
        x &= 0xFFFFFFFF
        x ^= x >> 16
        x = (x * 0x21F0AAAD) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x735A2D97) & 0xFFFFFFFF
        return x ^ (x >> 15)

    book = mix32(mix32(mix32(seed ^ 0x9E3779B9) ^ step) ^ mix32(tile ^ 0xC2B2AE35))
    key = mix32(book ^ index)
    out = []
    for pair in range((numel + 1) // 2):
        a = mix32(key ^ mix32((2 * pair) ^ 0x85EBCA6B)) ^ 0x80000000  # signed int32 + 2**31
        b = mix32(key ^ mix32((2 * pair + 1) ^ 0x85EBCA6B)) ^ 0x80000000
        radius = math.sqrt(-2.0 * math.log((a + 0.5) * 2.0**-32))
        theta = b * (2.0 * math.pi / 2.0**32)
        out += [radius * math.cos(theta), radius * math.sin(theta)]
    return out[:numel]


@pytest.mark.parametrize("seed, step, tile, index", sorted(GOLDEN))
def test_golden_values(seed: int, step: int, tile: int, index: int) -> None:
    values = codebook.codewords(seed, step, [tile], [index], 8)[0].tolist()
    assert values == GOLDEN[(seed, step, tile, index)]


@pytest.mark.parametrize(
    "seed, step, tile, index", [(0, 0, 0, 0), (1, 2, 3, 4), (2**32 - 1, 4095, 9999, 2**20 - 1), (99, 1, 0, 17)]
)
def test_matches_independent_reference(seed: int, step: int, tile: int, index: int) -> None:
    got = codebook.codewords(seed, step, [tile], [index], 301)[0]
    want = torch.tensor(reference_codeword(seed, step, tile, index, 301), dtype=torch.float64).to(torch.float32)
    assert torch.equal(got, want)


def test_any_codeword_is_computable_alone_and_independent_of_length() -> None:
    block = codebook.codewords(5, 3, [2] * 10, list(range(10)), 1000)
    for k in (0, 4, 9):
        assert torch.equal(codebook.codewords(5, 3, [2], [k], 1000)[0], block[k])
    assert torch.equal(codebook.codewords(5, 3, [2], [4], 77)[0], block[4, :77])


def test_codewords_differ_by_seed_step_tile_and_index() -> None:
    base = codebook.codewords(1, 1, [1], [1], 64)[0]
    for seed, step, tile, index in [(2, 1, 1, 1), (1, 2, 1, 1), (1, 1, 2, 1), (1, 1, 1, 2)]:
        assert not torch.equal(codebook.codewords(seed, step, [tile], [index], 64)[0], base)


def test_codewords_are_standard_gaussian_and_nearly_orthogonal() -> None:
    block = codebook.codewords(0, 1, [0] * 32 + [1] * 32, list(range(32)) * 2, 4096).to(torch.float64)
    assert abs(block.mean().item()) < 0.01
    assert abs(block.std().item() - 1.0) < 0.01
    kurtosis = (block**4).mean().item()
    assert abs(kurtosis - 3.0) < 0.1
    cosine = (block @ block.T) / 4096
    upper = torch.triu_indices(64, 64, 1)
    scaled = cosine[upper[0], upper[1]] * math.sqrt(4096)  # ~N(0, 1) for independent codewords
    assert 0.9 < scaled.std().item() < 1.1 and abs(scaled.mean().item()) < 0.1
    assert scaled.abs().max().item() < 6


def test_chunked_scan_equals_unchunked() -> None:
    """Blocks within one codebook, blocks spanning several tiles' codebooks, and codeword by codeword agree."""
    residuals = torch.randn(3, 4, 500, generator=torch.Generator().manual_seed(0))
    within = codebook.codebook_scores(7, 2, 300, residuals, chunk_elements=700)
    spanning = codebook.codebook_scores(7, 2, 300, residuals, chunk_elements=10**9)
    for tile in range(4):
        full = codebook.codewords(7, 2, [tile] * 300, range(300), 500) @ residuals[:, tile].T
        assert torch.allclose(within[:, tile], full.T, atol=1e-4) and torch.allclose(spanning[:, tile], full.T, atol=1e-4)
    assert torch.equal(within.argmax(dim=2), spanning.argmax(dim=2))


def test_scan_recovers_a_planted_codeword() -> None:
    target = codebook.codewords(3, 9, [1], [1234], 2000)
    residuals = torch.stack([torch.randn(2000), target[0]])[None]  # tile 1 holds the planted codeword
    scores = codebook.codebook_scores(3, 9, 4096, residuals, chunk_elements=2**14)
    assert int(scores[0, 1].argmax()) == 1234


@pytest.mark.slow
def test_torch_compile_gives_the_same_values() -> None:
    eager = codebook.codewords(11, 5, [3] * 37, list(range(37)), 999)
    codebook.use_torch_compile(True)
    try:
        compiled = codebook.codewords(11, 5, [3] * 37, list(range(37)), 999)
    finally:
        codebook.use_torch_compile(None)  # back to automatic
    assert torch.equal(eager, compiled)


@pytest.mark.slow
def test_large_scans_use_the_compiled_kernel_with_the_same_scores(monkeypatch) -> None:
    """Automatic mode: a scan of at least COMPILE_MIN_VALUES values goes through the compiled kernel."""
    monkeypatch.setattr(codebook, "COMPILE_MIN_VALUES", 64 * 500)
    residuals = torch.randn(1, 2, 500, generator=torch.Generator().manual_seed(1))
    small = codebook.codebook_scores(3, 4, 16, residuals)  # 16 000 values: eager
    compiled = codebook.codebook_scores(3, 4, 32, residuals)  # 32 000 values: compiled
    assert codebook._compiled is not None
    assert torch.allclose(compiled[..., :16], small, atol=1e-4)
    keys = codebook.codeword_keys(torch.tensor(123, dtype=torch.int32), torch.arange(64, dtype=torch.int32))
    hashed = codebook._hashed_counters(250, torch.device("cpu"))
    assert torch.equal(codebook._block_fn(keys, hashed, True), codebook._gaussian_block(keys, hashed))
