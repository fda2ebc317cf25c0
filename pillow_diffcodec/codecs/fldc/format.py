"""FLDC parameters and payload layout, free of torch so that headers parse without it.

See :mod:`.runner` for the codec and docs/FORMAT.md ("FLDC parameters (codec id 5)") for the bytes.
The header holds the encoder's settings (``lam``, the rate-distortion weight, and ``max_bytes``, the
payload budget ``bpp=`` asked for); each payload holds what its image was coded with: the lambda
actually used, P_phi's ``gamma`` (a log-scale and a shift per latent channel) and the timestep fraction
``t``, each as its exact float32 bits, then the range-coded latent (CDC's layout: two CRC-32s, the
hyper-latent stream and the latent stream).
"""

from __future__ import annotations

import math
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ...container import Reader, encode_varint
from ...errors import CorruptFileError, InvalidParameterError
from ..cdc.format import Payload as StreamPayload
from ..cdc.format import worst_case_payload

LAM_MIN, LAM_MAX = 1e-3, 1e6
MAX_BUDGET = 1 << 40
MAX_DECODE_STEPS = 100  # DDIM steps for t = 1: one model call per 1 % of the schedule
MAX_LOG_SCALE = 12.0  # |s_c| above this is refused as corrupt (a quantiser step of e^-12 .. e^12 latent units)
FLOAT_BYTES = 4


def float32(value: float) -> float:
    """``value`` rounded to the nearest float32 (what the file stores)."""
    return float(np.float32(value))


def decode_steps(t: float) -> int:
    """DDIM steps (UNet calls) of a decode that starts at timestep fraction ``t`` in [0, 1]: ceil(100 t)."""
    return int(math.ceil(float(t) * MAX_DECODE_STEPS))


@dataclass(frozen=True)
class FLDCParams:
    """FLDC settings: the rate-distortion weight ``lam`` fed to P_phi, and the payload budget ``max_bytes``
    (0: none). With a budget the encoder uses, per image, the largest lambda <= ``lam`` whose payload fits
    (a search over lambda; see :func:`pillow_diffcodec.codecs.fldc.runner.encode_batch`)."""

    lam: float = field(default=64.0, metadata={"help": "rate-distortion weight lambda (per MSE of [0, 1] images, per "
                                                       "bpp); larger: more bits, higher PSNR"})
    max_bytes: int = field(default=0, metadata={"help": "payload budget in bytes (0: none); bpp=/quality= set it"})

    def __post_init__(self) -> None:
        lam = self.lam
        if isinstance(lam, bool) or not isinstance(lam, (int, float, np.floating)) or not LAM_MIN <= lam <= LAM_MAX:
            raise InvalidParameterError(f"Expected lam in [{LAM_MIN:g}, {LAM_MAX:g}], got {lam!r}")
        object.__setattr__(self, "lam", float32(lam))
        budget = self.max_bytes
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or not 0 <= budget <= MAX_BUDGET:
            raise InvalidParameterError(f"Expected max_bytes in [0, 2**40], got {budget!r}")
        object.__setattr__(self, "max_bytes", int(budget))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FLDCParams:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidParameterError(
                f"Unknown FLDC option(s) {sorted(unknown)}; expected {sorted(cls.__dataclass_fields__)}")
        return cls(**data)

    def to_bytes(self) -> bytes:
        """Header encoding: lam as float32 (little-endian), varint max_bytes."""
        return struct.pack("<f", self.lam) + encode_varint(self.max_bytes)

    @classmethod
    def from_bytes(cls, data: bytes) -> FLDCParams:
        reader = Reader(data, len(data))
        (lam,) = struct.unpack("<f", reader.take(FLOAT_BYTES, "lambda"))
        budget = reader.varint("payload budget", MAX_BUDGET)
        if reader.pos != len(data):
            raise CorruptFileError("FLDC parameters have trailing bytes")
        if not (math.isfinite(lam) and LAM_MIN <= lam <= LAM_MAX):
            raise CorruptFileError(f"FLDC lambda {lam!r} in the header is outside [{LAM_MIN:g}, {LAM_MAX:g}]")
        return cls(lam, budget)

    def decode_model_calls(self, **_: Any) -> int:
        """Model calls of a decode at most: :data:`MAX_DECODE_STEPS` UNet calls (the file's t sets the actual
        number, ``ceil(100 t)``, read from the payload)."""
        return MAX_DECODE_STEPS


@dataclass(frozen=True)
class Gamma:
    """What P_phi gave for one image: the lambda used, log-scales and shifts per channel, timestep fraction."""

    lam: float
    log_scale: tuple[float, ...]
    shift: tuple[float, ...]
    t: float

    @property
    def steps(self) -> int:
        return decode_steps(self.t)

    def to_bytes(self) -> bytes:
        values = (self.lam, *self.log_scale, *self.shift, self.t)
        return struct.pack(f"<{len(values)}f", *values)

    @classmethod
    def from_bytes(cls, data: bytes, channels: int) -> Gamma:
        count = 2 * channels + 2
        if len(data) != FLOAT_BYTES * count:
            raise CorruptFileError(f"FLDC side information has {len(data)} bytes, expected {FLOAT_BYTES * count}")
        values = struct.unpack(f"<{count}f", data)
        if not all(math.isfinite(v) for v in values):
            raise CorruptFileError("FLDC side information holds a non-finite number")
        lam, t = values[0], values[-1]
        log_scale, shift = values[1 : 1 + channels], values[1 + channels : 1 + 2 * channels]
        if not LAM_MIN <= lam <= LAM_MAX:
            raise CorruptFileError(f"FLDC lambda {lam!r} in the payload is outside [{LAM_MIN:g}, {LAM_MAX:g}]")
        if not 0.0 <= t <= 1.0:
            raise CorruptFileError(f"FLDC timestep fraction {t!r} is outside [0, 1]")
        if max(abs(v) for v in log_scale) > MAX_LOG_SCALE or max(abs(v) for v in shift) > 1e6:
            raise CorruptFileError(f"FLDC quantiser parameters out of range: log-scales {log_scale}, shifts {shift}")
        return cls(lam, tuple(log_scale), tuple(shift), t)


def symbol_counts(channels: int, hyper: int, latent_width: int, latent_height: int) -> tuple[int, int]:
    """(latent symbols, hyper-latent symbols) for a padded latent of this size (multiples of 4)."""
    return channels * latent_width * latent_height, hyper * (latent_width // 4) * (latent_height // 4)


def payload_bound(channels: int, hyper: int, latent_width: int, latent_height: int) -> int:
    """The largest payload: the side information and every symbol at the range coder's worst cost."""
    return FLOAT_BYTES * (2 * channels + 2) + worst_case_payload(
        *symbol_counts(channels, hyper, latent_width, latent_height))


@dataclass(frozen=True)
class Payload:
    """An FLDC payload: :class:`Gamma` then CDC's stream layout (CRC of z and y symbols, z stream, y stream)."""

    gamma: Gamma
    streams: StreamPayload

    def to_bytes(self) -> bytes:
        return self.gamma.to_bytes() + self.streams.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes, channels: int, max_words: int) -> Payload:
        side = FLOAT_BYTES * (2 * channels + 2)
        if len(data) < side:
            raise CorruptFileError(f"FLDC payload of {len(data)} bytes is shorter than its side information")
        return cls(Gamma.from_bytes(data[:side], channels), StreamPayload.from_bytes(data[side:], max_words))
