"""Portable DDCM codebooks: every codeword is a pure function of (seed, step, tile, index, element).

DDCM (Ohayon, Manor, Michaeli, Elad, ICML 2025, eq. 5-6) replaces the Gaussian noise of each
reverse-diffusion step by an entry of a fixed codebook ``C_i`` of K i.i.d. N(0, I) vectors. The
official code draws the codebooks with ``torch.randn`` on the device, so files decode only on the
same device type. Here codeword element ``C_step(index)[j]`` is computed by a counter-based
integer hash followed by a float64 Box-Muller transform rounded to float32 (docs/FORMAT.md,
"Codebooks"). The hash is 32-bit modular arithmetic (xor, logical shift, wrapping multiply) held in
int32 lanes, which CPU vector units, CUDA and ``torch.compile`` all execute with two's-complement
wrap-around, so every backend computes the same integers; a pure-Python reference in the tests
pins them. Any single codeword can be made without the others.

Each tile of a tiled sample has its own codebook per step (the whole image is tile 0 when untiled).
The encoder scans codebooks in chunks of codewords (:func:`codebook_scores`), so its extra memory
is bounded by ``chunk_elements`` and does not grow with K; the decoder makes only the codewords it
needs (:func:`codewords`). Large scans on a CPU generate with a ``torch.compile``-d kernel (one fused,
vectorised loop: faster than ``torch.randn`` for the same count) and fall back to the eager kernel,
which computes the same values, when compilation is not possible (:func:`use_torch_compile`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from functools import lru_cache

import torch

MASK32 = 0xFFFFFFFF
SEED_SALT = 0x9E3779B9
COUNTER_SALT = 0x85EBCA6B
TILE_SALT = 0xC2B2AE35
TWO_PI_OVER_2_32 = 2.0 * math.pi / 2.0**32
DEFAULT_CHUNK_ELEMENTS = 1 << 19
COMPILED_CHUNK_ELEMENTS = 1 << 21  # the fused kernel keeps no float64 temporaries: larger blocks, fewer calls
COMPILE_MIN_VALUES = 1 << 22  # scans of at least this many values (per step) use the compiled kernel


def mix32_int(x: int) -> int:
    """The 32-bit bijective hash of docs/FORMAT.md on a Python int (a 'lowbias32' finaliser)."""
    x &= MASK32
    x ^= x >> 16
    x = (x * 0x21F0AAAD) & MASK32
    x ^= x >> 15
    x = (x * 0x735A2D97) & MASK32
    x ^= x >> 15
    return x


def to_int32(value: int) -> int:
    """The int32 holding the same 32 bits as the unsigned ``value``."""
    value &= MASK32
    return value - (1 << 32) if value >= 1 << 31 else value


def mix32(x: torch.Tensor) -> torch.Tensor:
    """:func:`mix32_int` on an int32 tensor, out of place (the form ``torch.compile`` fuses into one loop)."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * 0x21F0AAAD
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * 0x735A2D97
    return x ^ ((x >> 15) & 0x1FFFF)


def mix32_(x: torch.Tensor) -> torch.Tensor:
    """:func:`mix32_int` in place on an int32 tensor (bit patterns of uint32 values).

    Right shifts are made logical by masking; products wrap modulo 2**32.
    """
    x ^= (x >> 16) & 0xFFFF
    x *= 0x21F0AAAD
    x ^= (x >> 15) & 0x1FFFF
    x *= 0x735A2D97
    x ^= (x >> 15) & 0x1FFFF
    return x


def codebook_key(seed: int, step: int, tile: int) -> int:
    """Key of codebook ``C_step`` of a tile: ``mix32(mix32(mix32(seed ^ SEED_SALT) ^ step) ^ mix32(tile ^ TILE_SALT))``."""
    return mix32_int(mix32_int(mix32_int(seed ^ SEED_SALT) ^ step) ^ mix32_int(tile ^ TILE_SALT))


def codeword_keys(books: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Keys ``mix32(book ^ k)`` of codewords, as int32 bit patterns (``books`` broadcasts against ``indices``)."""
    return mix32_(books.to(torch.int32) ^ indices.to(torch.int32))


@lru_cache(maxsize=8)
def _hashed_counters(pairs: int, device: torch.device) -> torch.Tensor:
    """``mix32(c ^ COUNTER_SALT)`` for counters c in [0, 2 * pairs), shared by all codewords, as (2, pairs):
    row 0 the even counters (radii), row 1 the odd ones (angles).

    Hashing the counter before combining it with the key makes two codewords whose keys differ
    share values only at pseudo-randomly scattered positions, never at shifted ones.
    """
    counters = torch.arange(2 * pairs, dtype=torch.int32, device=device) ^ to_int32(COUNTER_SALT)
    return mix32_(counters).view(pairs, 2).T.contiguous()


def _gaussian_block(keys: torch.Tensor, hashed_counters: torch.Tensor) -> torch.Tensor:
    """Float32 Gaussians for a block of codeword keys (B,) over the hashed counter pairs (2, P) -> (B, 2P).

    Box-Muller on pair p: the even element is ``r cos(theta)``, the odd one ``r sin(theta)``. A hash h,
    read as a signed int32 s, becomes ``s + 2**31`` in [0, 2**32) (exact in float64); u1 =
    (s + 2**31 + 0.5) / 2**32 lies in (0, 1), so the log never sees 0. Written out of place on
    contiguous rows so that ``torch.compile`` fuses it into one vectorised loop with the same values.
    """
    radius = torch.sqrt(torch.log((mix32(keys[:, None] ^ hashed_counters[0]).double() + (2.0**31 + 0.5)) * 2.0**-32)
                        * -2.0)
    theta = (mix32(keys[:, None] ^ hashed_counters[1]).double() + 2.0**31) * TWO_PI_OVER_2_32
    pairs = torch.stack([(torch.cos(theta) * radius).float(), (torch.sin(theta) * radius).float()], dim=-1)
    return pairs.view(keys.shape[0], -1)  # float64 products, rounded to float32 once


_compile_mode: bool | None = None  # None: automatic; True: always; False: never
_compiled: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None


def use_torch_compile(enabled: bool | None = True) -> None:
    """Generate codewords with a ``torch.compile``-d kernel: True always, False never, None (the default)
    for scans of at least :data:`COMPILE_MIN_VALUES` values on a CPU. The values are the same either way.

    Compilation needs a working C++ compiler (CPU) or Triton (CUDA) and takes seconds on first use
    (inductor caches the kernel on disk for later processes).
    """
    global _compile_mode
    _compile_mode = enabled


def _compiled_wanted(large: bool, device: torch.device) -> bool:
    """Whether the compiled kernel makes this scan's codewords (see :func:`use_torch_compile`)."""
    return _compile_mode if _compile_mode is not None else large and device.type == "cpu"


def _block_fn(keys: torch.Tensor, hashed_counters: torch.Tensor, large: bool = False) -> torch.Tensor:
    """Codeword values for keys (B,): the compiled kernel when asked for (or automatically for a large scan
    on a CPU), else the eager one. In automatic mode a failed compilation warns once and stays eager."""
    global _compiled, _compile_mode
    if not _compiled_wanted(large, keys.device):
        return _gaussian_block(keys, hashed_counters)
    if _compiled is None:
        _compiled = torch.compile(_gaussian_block, dynamic=True)
    if _compile_mode:
        return _compiled(keys, hashed_counters)
    try:
        return _compiled(keys, hashed_counters)
    except Exception as exc:  # noqa: BLE001 - any compiler failure: the eager kernel gives the same values
        _compile_mode = False
        warnings.warn(f"Codebook generation stays uncompiled (slower, same values): {exc}", RuntimeWarning,
                      stacklevel=2)
        return _gaussian_block(keys, hashed_counters)


def codewords(
    seed: int, step: int, tiles: Sequence[int], indices: Sequence[int], numel: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Codewords ``C_step,tile(k)`` for aligned (tile, k) pairs, as float32 of shape (len(indices), numel).

    As many values as a large scan (a decoder step with hundreds of atoms per tile) are made by the compiled
    kernel in automatic mode, like the encoder's scans: the same values, several times faster."""
    device = torch.device(device)
    if len(indices) == 0:
        return torch.empty(0, numel, dtype=torch.float32, device=device)
    books = torch.tensor([to_int32(codebook_key(seed, step, t)) for t in tiles], dtype=torch.int32, device=device)
    keys = codeword_keys(books, torch.as_tensor(list(indices), dtype=torch.int32, device=device))
    large = len(indices) * numel >= COMPILE_MIN_VALUES
    return _block_fn(keys, _hashed_counters((numel + 1) // 2, device), large)[:, :numel]


def codebook_scores(
    seed: int,
    step: int,
    size: int,
    residuals: torch.Tensor,
    chunk_elements: int | None = None,
) -> torch.Tensor:
    """Inner products ``<C_step,tile(k), r_n,tile>`` for k < size, every image n and tile of ``residuals`` (N, T, D).

    Returns float32 scores of shape (N, T, size). Codewords are generated in blocks of about
    ``chunk_elements`` values (several small codebooks per block, or a large one in parts; default
    :data:`DEFAULT_CHUNK_ELEMENTS`, or :data:`COMPILED_CHUNK_ELEMENTS` for a scan the compiled kernel
    makes) and shared by all N images, so a batch pays for them once. Each image's scores are computed on their own,
    so they do not depend on the batch.
    """
    images, tiles, numel = residuals.shape
    device = residuals.device
    large = tiles * size * numel >= COMPILE_MIN_VALUES
    if chunk_elements is None:
        chunk_elements = COMPILED_CHUNK_ELEMENTS if _compiled_wanted(large, device) else DEFAULT_CHUNK_ELEMENTS
    per_block = max(1, chunk_elements // max(numel, 1))
    hashed = _hashed_counters((numel + 1) // 2, device)
    residuals = residuals.to(torch.float32)
    scores = torch.empty(images, tiles, size, dtype=torch.float32, device=device)
    if size >= per_block:  # one codebook in several blocks
        for tile in range(tiles):
            book = torch.tensor(to_int32(codebook_key(seed, step, tile)), dtype=torch.int32, device=device)
            for start in range(0, size, per_block):
                stop = min(size, start + per_block)
                indices = torch.arange(start, stop, dtype=torch.int32, device=device)
                block = _block_fn(codeword_keys(book, indices), hashed, large)[:, :numel]
                for n in range(images):
                    scores[n, tile, start:stop] = block @ residuals[n, tile]
        return scores
    tiles_per_block = per_block // size
    indices = torch.arange(size, dtype=torch.int32, device=device)
    for first in range(0, tiles, tiles_per_block):
        last = min(tiles, first + tiles_per_block)
        books = torch.tensor(
            [to_int32(codebook_key(seed, step, t)) for t in range(first, last)], dtype=torch.int32, device=device
        )
        keys = codeword_keys(books[:, None], indices[None, :]).reshape(-1)
        block = _block_fn(keys, hashed, large)[:, :numel].view(last - first, size, numel)
        for n in range(images):
            scores[n, first:last] = torch.bmm(block, residuals[n, first:last, :, None])[..., 0]
    return scores
