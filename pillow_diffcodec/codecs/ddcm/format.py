"""DDCM parameters and bitstream layout, free of torch so that headers parse without it.

See :mod:`.runner` for the codec itself and docs/FORMAT.md for the byte-level description. The codec's
name and file id live in the registry (:mod:`pillow_diffcodec.codecs`) only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ...container import Reader, encode_varint
from ...errors import CorruptFileError, InvalidParameterError
from . import entropy

SELECTIONS = {"mp": 0, "topm": 1}
MAX_STEPS = 4096
MAX_CODEBOOK_SIZE = 1 << 20
MAX_ATOMS = 1024
MAX_COEF_LEVELS = 256
MAX_TILE = 4096
PARAM_FLAG_WINDOW = 0x01


def _check_range(name: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidParameterError(f"Expected {name} in [{low}, {high}], got {value!r}")


@dataclass(frozen=True)
class DDCMParams:
    """DDCM configuration: ``steps`` T, ``codebook_size`` K, ``atoms`` M, ``coef_levels`` C, ``selection``,
    ``window`` and ``tile``.

    ``window`` is ``(high, low)`` in the model's training timesteps (inclusive): steps at other
    timesteps use K = 1 and cost nothing. None means every step is coded.

    ``tile`` splits the sample into ``tile`` x ``tile`` squares, each with its own codebooks, so
    one step carries ``tiles x log2 K`` bits at the cost of one K-codeword scan of the whole image
    (0: the whole image is one tile, as in the paper).

    The field defaults are the one family of defaults: parameters given without ``bpp=``/``quality=``
    are completed from them, and rate control searches atoms and codebook size starting from them
    (with any given parameter fixed). They suit the built-in model on a CPU; the paper's settings
    (T = 1000, K up to 8192, ``selection="mp"``, ``tile=0``) are all expressible.
    """

    steps: int = field(default=20, metadata={"help": "sampler steps T (model calls per image)"})
    codebook_size: int = field(default=64, metadata={"help": "codebook size K per step and tile"})
    atoms: int = field(default=1, metadata={"help": "codewords combined per step and tile, M"})
    coef_levels: int = field(default=1, metadata={"help": "coefficient levels C of matching pursuit (mp only)"})
    selection: str = field(default="topm", metadata={
        "help": "'mp': matching pursuit (the paper); 'topm': Turbo-DDCM's top-M atoms with signs",
        "choices": ("mp", "topm")})
    window: tuple[int, int] | None = field(default=None, metadata={
        "help": "(high, low) training timesteps whose steps are coded; K = 1 elsewhere (None: every step)",
        "type": int, "nargs": 2, "metavar": ("HIGH", "LOW")})
    tile: int = field(default=32, metadata={
        "help": "side of the square tiles that each choose their own codewords (0: whole image, as in the paper)"})

    def __post_init__(self) -> None:
        _check_range("steps", self.steps, 1, MAX_STEPS)
        _check_range("codebook_size", self.codebook_size, 1, MAX_CODEBOOK_SIZE)
        _check_range("atoms", self.atoms, 1, min(MAX_ATOMS, self.codebook_size))
        _check_range("coef_levels", self.coef_levels, 1, MAX_COEF_LEVELS)
        _check_range("tile", self.tile, 0, MAX_TILE)
        if self.selection not in SELECTIONS:
            raise InvalidParameterError(f"Expected selection in {sorted(SELECTIONS)}, got {self.selection!r}")
        if self.window is not None:
            if not isinstance(self.window, (tuple, list)) or len(self.window) != 2:
                raise InvalidParameterError(f"Expected window as (high, low) timesteps, got {self.window!r}")
            high, low = self.window
            _check_range("window high", high, 0, MAX_STEPS * 16)
            _check_range("window low", low, 0, high)
            object.__setattr__(self, "window", (int(high), int(low)))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["window"] = list(self.window) if self.window is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DDCMParams:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidParameterError(
                f"Unknown DDCM option(s) {sorted(unknown)}; expected {sorted(cls.__dataclass_fields__)}"
            )
        data = dict(data)
        if data.get("window") is not None:
            data["window"] = tuple(data["window"])
        return cls(**data)

    def to_bytes(self) -> bytes:
        """Header encoding: varints steps, K, M, C, tile; u8 selection; u8 flags; [varint high, low]."""
        flags = PARAM_FLAG_WINDOW if self.window is not None else 0
        out = b"".join(encode_varint(v) for v in (self.steps, self.codebook_size, self.atoms, self.coef_levels))
        out += encode_varint(self.tile)
        out += bytes([SELECTIONS[self.selection], flags])
        if self.window is not None:
            out += encode_varint(self.window[0]) + encode_varint(self.window[1])
        return out

    @classmethod
    def from_bytes(cls, data: bytes) -> DDCMParams:
        reader = Reader(data, len(data))
        try:
            steps = reader.varint("steps", MAX_STEPS)
            size = reader.varint("codebook_size", MAX_CODEBOOK_SIZE)
            atoms = reader.varint("atoms", MAX_ATOMS)
            levels = reader.varint("coef_levels", MAX_COEF_LEVELS)
            tile = reader.varint("tile", MAX_TILE)
            selection_code = reader.u8("selection")
            flags = reader.u8("parameter flags")
            window = None
            if flags & PARAM_FLAG_WINDOW:
                window = (reader.varint("window high", MAX_STEPS * 16), reader.varint("window low", MAX_STEPS * 16))
            if flags & ~PARAM_FLAG_WINDOW or reader.pos != len(data):
                raise CorruptFileError("DDCM parameters have unknown flags or trailing bytes")
            selections = {code: name for name, code in SELECTIONS.items()}
            if selection_code not in selections:
                raise CorruptFileError(f"Unknown DDCM selection code {selection_code}")
            return cls(steps, size, atoms, levels, selections[selection_code], window, tile)
        except InvalidParameterError as exc:
            raise CorruptFileError(f"Invalid DDCM parameters in file: {exc}") from None

    def decode_model_calls(self, **_decode_options: Any) -> int:
        """Model calls a decoder makes (one per step): the work figure that decode limits apply to."""
        return self.steps

    def step_sizes(self, timesteps: Sequence[int]) -> list[int]:
        """Codebook size used after each of the first T-1 model calls (K, or 1 outside the window)."""
        sizes = []
        for t in timesteps[:-1]:
            inside = self.window is None or self.window[1] <= t <= self.window[0]
            sizes.append(self.codebook_size if inside else 1)
        return sizes

    def symbol_sizes(self, step_size: int) -> list[int]:
        """Alphabet sizes of the symbols one tile writes at one step (empty for K = 1)."""
        if step_size == 1:
            return []
        if self.selection == "topm":
            return [math.comb(step_size, self.atoms)] + [2] * self.atoms
        return [step_size - m for m in range(self.atoms)] + [self.coef_levels] * (self.atoms - 1)

    def bits_per_step(self) -> float:
        """Information per coded step and tile in bits (before the payload's rounding to words)."""
        return sum(math.log2(s) for s in self.symbol_sizes(self.codebook_size))


@dataclass(frozen=True)
class StepChoice:
    """What one step selected for one image: atom indices plus their coefficient levels or signs."""

    indices: tuple[int, ...]
    levels: tuple[int, ...] = ()  # mp: level of atoms 2..M (coefficient (l + 1) / C)
    signs: tuple[int, ...] = ()  # topm: 0 for +1, 1 for -1, aligned with the sorted indices


TRIVIAL_CHOICE = StepChoice(indices=(0,))


def choice_to_symbols(params: DDCMParams, choice: StepChoice, step_size: int) -> list[int]:
    """Symbols of one step: ordered-distinct ranks + levels (mp) or combinatorial subset rank + signs (topm)."""
    if step_size == 1:
        return []
    if params.selection == "topm":
        rank = sum(math.comb(c, i + 1) for i, c in enumerate(choice.indices))  # combinatorial number system
        return [rank, *choice.signs]
    ranks, used = [], []
    for k in choice.indices:
        ranks.append(k - sum(1 for u in used if u < k))  # position of k among the unused indices
        used.append(k)
    return ranks + list(choice.levels)


def unrank_subset(rank: int, m: int, n: int) -> tuple[int, ...]:
    """The m-subset of range(n) (ascending) whose combinatorial-number-system rank is ``rank``, the inverse of
    ``sum(comb(c_i, i + 1))`` (Knuth, TAOCP 7.2.1.3, Theorem L). For i = m..1 the largest c with
    comb(c, i) <= rank is found by walking c down from the previous one while updating the binomial
    coefficient in place (comb(c - 1, i) = comb(c, i) (c - i) / c; comb(c - 1, i - 1) = comb(c, i) i / c):
    O(n + m) exact integer steps instead of a fresh ``math.comb`` per probe."""
    indices = []
    c = n - 1
    binomial = math.comb(c, m)
    for i in range(m, 0, -1):
        while binomial > rank:  # c >= i always holds here, since comb(i - 1, i) = 0 <= rank
            binomial = binomial * (c - i) // c
            c -= 1
        indices.append(c)
        rank -= binomial
        if i > 1:  # next: comb(c - 1, i - 1)
            binomial = binomial * i // c if c else 0
            c -= 1
    return tuple(reversed(indices))


def symbols_to_choice(params: DDCMParams, symbols: Sequence[int], step_size: int) -> StepChoice:
    """Inverse of :func:`choice_to_symbols`."""
    if step_size == 1:
        return TRIVIAL_CHOICE
    m = params.atoms
    if params.selection == "topm":
        return StepChoice(indices=unrank_subset(symbols[0], m, step_size), signs=tuple(symbols[1:]))
    indices: list[int] = []
    for rank in symbols[:m]:
        k = rank
        for used in sorted(indices):  # the rank-th index not yet used
            if used <= k:
                k += 1
        indices.append(k)
    return StepChoice(indices=tuple(indices), levels=tuple(symbols[m:]))


Choices = list[StepChoice]  # one StepChoice per tile, in row-major tile order


def payload_symbols(
    params: DDCMParams, step_sizes: Sequence[int], history: Sequence[Choices]
) -> tuple[list[int], list[int]]:
    """(values, alphabet sizes) of a whole file's payload from one image's choices (steps, then tiles)."""
    values: list[int] = []
    sizes: list[int] = []
    for size, tiles in zip(step_sizes, history):
        for choice in tiles:
            values += choice_to_symbols(params, choice, size)
            sizes += params.symbol_sizes(size)
    return values, sizes


def write_payload(params: DDCMParams, step_sizes: Sequence[int], history: Sequence[Choices]) -> bytes:
    """One image's choices (per step, per tile) -> its entropy-coded payload."""
    values, sizes = payload_symbols(params, step_sizes, history)
    return entropy.encode_uniform(values, sizes)


def payload_size(params: DDCMParams, step_sizes: Sequence[int], tiles: int) -> int:
    """Exact payload length, computed per distinct codebook size so a hostile header cannot make it build long lists."""
    counts: dict[int, int] = {}
    for size in step_sizes:
        counts[size] = counts.get(size, 0) + 1
    return entropy.payload_size_grouped((params.symbol_sizes(size), n * tiles) for size, n in counts.items())


def read_payload(params: DDCMParams, step_sizes: Sequence[int], tiles: int, payload: bytes) -> list[Choices]:
    """A payload -> the choices it stores, per step and tile (length, symbols and ranks validated)."""
    expected = payload_size(params, step_sizes, tiles)
    if len(payload) != expected:
        raise CorruptFileError(f"Payload has {len(payload)} bytes; the file's DDCM parameters require {expected}")
    sizes = [s for size in step_sizes for _ in range(tiles) for s in params.symbol_sizes(size)]
    return _history_from_symbols(params, step_sizes, tiles, entropy.decode_uniform(payload, sizes))


def _history_from_symbols(
    params: DDCMParams, step_sizes: Sequence[int], tiles: int, values: Sequence[int]
) -> list[Choices]:
    """Rebuild one image's choices from its decoded payload symbols (validating them)."""
    history, position = [], 0
    for size in step_sizes:
        count = len(params.symbol_sizes(size))
        step = []
        for _ in range(tiles):
            try:
                step.append(symbols_to_choice(params, values[position : position + count], size))
            except (ValueError, IndexError) as exc:
                raise CorruptFileError(f"Invalid DDCM symbols at step {len(history) + 1}: {exc}") from None
            position += count
        history.append(step)
    return history
