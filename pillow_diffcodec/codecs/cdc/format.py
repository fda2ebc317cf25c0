"""CDC parameters, decode options and payload layout, free of torch so that headers parse without it.

See :mod:`.runner` for the codec and docs/FORMAT.md ("CDC parameters (codec id 3)") for the bytes. The
file stores only what the decoder needs: which rate point of the model coded the latent. How to decode
(``steps``, ``gamma``) is chosen at decode time (Yang & Mandt 2023: one file, a deterministic decoder
for distortion or a stochastic one for realism).
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ...container import Reader, encode_varint
from ...errors import CorruptFileError, InvalidParameterError
from ...options import Option

MAX_RATE_POINTS = 255
DEFAULT_STEPS = 17  # the paper's default number of decoding steps (App. B)
MAX_STEPS = 1000
DEFAULT_GAMMA = 0.0
MAX_GAMMA = 4.0
CRC_BYTES = 4
WORD_BYTES = 4
MAX_SYMBOL_BITS = 24  # constriction's precision: no symbol costs more than this in the range coder
LATENT_STRIDE = 16  # y is at 1/16 of the (padded) image resolution
HYPER_STRIDE = 64  # z is at 1/64; images are padded to a multiple of this

CDC_DECODE_OPTIONS = (
    Option("steps", f"DDIM decoding steps (model calls; default {DEFAULT_STEPS}, the paper's)", type=int),
    Option("gamma", "std of the decoder's starting noise: 0 deterministic (lowest distortion), ~0.8 perceptual "
           "(the paper's); the noise comes from the file's seed", type=float),
)


def check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= MAX_STEPS:
        raise InvalidParameterError(f"Expected steps in [1, {MAX_STEPS}], got {steps!r}")
    return int(steps)


def check_gamma(gamma: Any) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 <= gamma <= MAX_GAMMA:
        raise InvalidParameterError(f"Expected gamma in [0, {MAX_GAMMA}], got {gamma!r}")
    return float(gamma)


@dataclass(frozen=True)
class CDCParams:
    """CDC configuration: the model's rate point (0 = the lowest rate) that coded the latent.

    Rate control (``bpp=``/``quality=``) picks it: the highest rate point whose file, measured on the
    image, is at or under the target (see :func:`pillow_diffcodec.codecs.cdc.runner.choose_params`).
    """

    rate_point: int = field(default=0, metadata={"help": "index of the model's rate point, lowest rate first"})

    def __post_init__(self) -> None:
        value = self.rate_point
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < MAX_RATE_POINTS:
            raise InvalidParameterError(f"Expected rate_point in [0, {MAX_RATE_POINTS - 1}], got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CDCParams:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidParameterError(
                f"Unknown CDC option(s) {sorted(unknown)}; expected {sorted(cls.__dataclass_fields__)}")
        return cls(**data)

    def to_bytes(self) -> bytes:
        """Header encoding: varint rate point."""
        return encode_varint(self.rate_point)

    @classmethod
    def from_bytes(cls, data: bytes) -> CDCParams:
        reader = Reader(data, len(data))
        rate_point = reader.varint("rate point", MAX_RATE_POINTS - 1)
        if reader.pos != len(data):
            raise CorruptFileError("CDC parameters have trailing bytes")
        return cls(rate_point)

    def decode_model_calls(self, steps: int = DEFAULT_STEPS, **_: Any) -> int:
        """Model calls of a decode: one U-Net call per DDIM step (``steps`` is a decode option)."""
        return check_steps(steps)


def padded(width: int, height: int) -> tuple[int, int]:
    """Image size padded up to a multiple of :data:`HYPER_STRIDE`."""
    return -(-width // HYPER_STRIDE) * HYPER_STRIDE, -(-height // HYPER_STRIDE) * HYPER_STRIDE


def symbol_counts(latent: int, hyper: int, width: int, height: int) -> tuple[int, int]:
    """(number of y symbols, number of z symbols) for an image of this size."""
    pw, ph = padded(width, height)
    return latent * (pw // LATENT_STRIDE) * (ph // LATENT_STRIDE), hyper * (pw // HYPER_STRIDE) * (ph // HYPER_STRIDE)


def worst_case_payload(y_symbols: int, z_symbols: int) -> int:
    """Largest payload for these symbol counts (every symbol at the range coder's worst cost)."""
    def words(count: int) -> int:
        return -(-count * MAX_SYMBOL_BITS // 32) + 2

    return 2 * CRC_BYTES + len(encode_varint(words(z_symbols))) + WORD_BYTES * (words(z_symbols) + words(y_symbols))


def crc(symbols: np.ndarray) -> int:
    """CRC-32 of symbols as little-endian int32 in raster order (channel, row, column)."""
    return zlib.crc32(np.ascontiguousarray(symbols, dtype="<i4").tobytes())


@dataclass(frozen=True)
class Payload:
    """A CDC payload: CRC-32 of the z symbols and of the y symbols, then the two range-coded streams."""

    z_crc: int
    y_crc: int
    z_words: bytes
    y_words: bytes

    def to_bytes(self) -> bytes:
        head = self.z_crc.to_bytes(CRC_BYTES, "little") + self.y_crc.to_bytes(CRC_BYTES, "little")
        return head + encode_varint(len(self.z_words) // WORD_BYTES) + self.z_words + self.y_words

    @classmethod
    def from_bytes(cls, data: bytes, max_words: int) -> Payload:
        reader = Reader(data, len(data))
        z_crc = int.from_bytes(reader.take(CRC_BYTES, "z checksum"), "little")
        y_crc = int.from_bytes(reader.take(CRC_BYTES, "y checksum"), "little")
        count = reader.varint("z stream length", max_words)
        z_words = reader.take(WORD_BYTES * count, "z stream")
        y_words = data[reader.pos :]
        if len(y_words) % WORD_BYTES:
            raise CorruptFileError(f"CDC y stream has {len(y_words)} bytes, not a whole number of 32-bit words")
        return cls(z_crc, y_crc, z_words, y_words)
