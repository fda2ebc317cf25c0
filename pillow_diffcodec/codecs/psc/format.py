"""PSC parameters and payload layout, free of torch so that headers parse without it.

See :mod:`.runner` for the codec itself and docs/FORMAT.md ("PSC parameters (codec id 2)") for the
byte-level description. The codec's name and file id live in the registry only.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ...container import Reader, encode_varint
from ...errors import CorruptFileError, InvalidParameterError
from ...options import Option

FINAL_SAMPLERS = {"ddrm": 0, "mean": 1}
QUANTIZERS = {"uniform": 0, "float8": 1}
MAX_ITERATIONS = 4096
MAX_ROWS = 1024
MAX_SAMPLES = 1025
MAX_SAMPLER_STEPS = 1000
MAX_BYTES = 1 << 28
MIN_STEP, MAX_STEP = 1e-6, 1e3
SIGNATURE_BYTES = 4
CHECK_BYTES = 2  # each H checksum and the pixel checksum: the low 16 bits of a CRC-32
MAX_SYMBOL_BITS = 24  # constriction's precision: no symbol costs more than this in the range coder

PSC_DECODE_OPTIONS = (
    Option("max_measurements", "decode only the first n measurements (progressive decoding)", type=int),
    Option("sampler", "final reconstruction instead of the file's: 'ddrm' or 'mean'", type=str,
           choices=tuple(FINAL_SAMPLERS)),
    Option("force", "decode under another compute signature than the encoder's (a divergence is still reported)"),
)


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidParameterError(f"Expected {name} in [{low}, {high}], got {value!r}")


def _check_choice(name: str, value: Any, choices: dict[str, int]) -> None:
    if value not in choices:
        raise InvalidParameterError(f"Expected {name} in {sorted(choices)}, got {value!r}")


@dataclass(frozen=True)
class PSCParams:
    """PSC configuration (Elata, Michaeli, Elad, "Zero-shot image compression with diffusion-based
    posterior sampling", Algorithms 1-2).

    Each of at most ``iterations`` rounds draws ``samples`` posterior samples with DDRM
    (``ddrm_steps`` model calls each), appends the top ``rows`` principal directions of the samples to
    the measurement matrix H and codes the image's measurements on them. ``max_bytes`` is the payload
    budget: the encoder stops at the last measurement that fits (0: code every round). After the
    rounds, ``final_sampler`` makes the reconstruction with ``final_steps`` model calls per sample.

    The defaults are the one family of defaults (rate control changes only ``max_bytes`` and, for the
    uniform quantiser, ``step``); the paper's ImageNet setting is ``rows=12, samples=16, ddrm_steps=20``.
    """

    iterations: int = field(default=16, metadata={"help": "AdaSense rounds N at most (a byte budget may stop earlier)"})
    rows: int = field(default=6, metadata={"help": "measurements r added per round (fewer than samples)"})
    samples: int = field(default=8, metadata={"help": "posterior samples s per round"})
    ddrm_steps: int = field(default=8, metadata={"help": "DDRM sampler steps per posterior sample"})
    final_steps: int = field(default=20, metadata={"help": "sampler steps of the final reconstruction"})
    final_sampler: str = field(default="mean", metadata={
        "help": "final reconstruction: 'ddrm' (one DDRM sample) or 'mean' (average of s DDRM samples)",
        "choices": tuple(FINAL_SAMPLERS)})
    quantizer: str = field(default="uniform", metadata={
        "help": "measurement quantiser: 'uniform' (step below) or 'float8' (e4m3, as in the paper)",
        "choices": tuple(QUANTIZERS)})
    step: float = field(default=0.05, metadata={"help": "uniform quantiser step (model-space units)"})
    max_bytes: int = field(default=0, metadata={"help": "payload budget in bytes (0: code every round)"})
    check_every: int = field(default=4, metadata={"help": "rounds between the H checksums stored in the file"})

    def __post_init__(self) -> None:
        _check_int("iterations", self.iterations, 1, MAX_ITERATIONS)
        _check_int("samples", self.samples, 2, MAX_SAMPLES)
        _check_int("rows", self.rows, 1, min(MAX_ROWS, self.samples - 1))
        _check_int("ddrm_steps", self.ddrm_steps, 1, MAX_SAMPLER_STEPS)
        _check_int("final_steps", self.final_steps, 1, MAX_SAMPLER_STEPS)
        _check_int("max_bytes", self.max_bytes, 0, MAX_BYTES)
        _check_int("check_every", self.check_every, 1, MAX_ITERATIONS)
        _check_choice("final_sampler", self.final_sampler, FINAL_SAMPLERS)
        _check_choice("quantizer", self.quantizer, QUANTIZERS)
        step = self.step
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not MIN_STEP <= step <= MAX_STEP:
            raise InvalidParameterError(f"Expected step in [{MIN_STEP}, {MAX_STEP}], got {step!r}")
        object.__setattr__(self, "step", float(np.float32(step)))  # the file stores float32

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PSCParams:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidParameterError(
                f"Unknown PSC option(s) {sorted(unknown)}; expected {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**data)

    def to_bytes(self) -> bytes:
        """Header encoding: varints N, r, s, ddrm_steps, final_steps, max_bytes, check_every;
        u8 final sampler; u8 quantiser; float32 LE step."""
        ints = (self.iterations, self.rows, self.samples, self.ddrm_steps, self.final_steps, self.max_bytes,
                self.check_every)
        out = b"".join(encode_varint(v) for v in ints)
        out += bytes([FINAL_SAMPLERS[self.final_sampler], QUANTIZERS[self.quantizer]])
        return out + struct.pack("<f", self.step)

    @classmethod
    def from_bytes(cls, data: bytes) -> PSCParams:
        reader = Reader(data, len(data))
        try:
            iterations = reader.varint("iterations", MAX_ITERATIONS)
            rows = reader.varint("rows", MAX_ROWS)
            samples = reader.varint("samples", MAX_SAMPLES)
            ddrm_steps = reader.varint("ddrm_steps", MAX_SAMPLER_STEPS)
            final_steps = reader.varint("final_steps", MAX_SAMPLER_STEPS)
            max_bytes = reader.varint("max_bytes", MAX_BYTES)
            check_every = reader.varint("check_every", MAX_ITERATIONS)
            sampler_code, quantizer_code = reader.u8("final sampler"), reader.u8("quantizer")
            (step,) = struct.unpack("<f", reader.take(4, "step"))
            if reader.pos != len(data):
                raise CorruptFileError("PSC parameters have trailing bytes")
            samplers = {code: name for name, code in FINAL_SAMPLERS.items()}
            quantizers = {code: name for name, code in QUANTIZERS.items()}
            if sampler_code not in samplers or quantizer_code not in quantizers:
                raise CorruptFileError(f"Unknown PSC sampler code {sampler_code} or quantiser code {quantizer_code}")
            if not math.isfinite(step):
                raise CorruptFileError(f"PSC quantiser step is {step}")
            return cls(iterations, rows, samples, ddrm_steps, final_steps, samplers[sampler_code],
                       quantizers[quantizer_code], step, max_bytes, check_every)
        except InvalidParameterError as exc:
            raise CorruptFileError(f"Invalid PSC parameters in file: {exc}") from None

    def decode_model_calls(self, **_decode_options: Any) -> int:
        """Model calls a decoder makes at most: N rounds x s samples x DDRM steps, plus the final
        reconstruction counted as the costlier sampler (s x final steps for 'mean'), since the sampler
        can be chosen at decode time."""
        return self.iterations * self.samples * self.ddrm_steps + self.samples * self.final_steps

    @property
    def max_measurements(self) -> int:
        return self.iterations * self.rows


def rounds_for(measurements: int, rows: int) -> int:
    """Rounds whose rows carry ``measurements`` coded values (the last one may be partial)."""
    return -(-measurements // rows)


def checkpoints(rounds: int, every: int) -> list[int]:
    """Rounds (1-based) after which an H checksum is stored: every ``every``-th and the last one."""
    points = list(range(every, rounds + 1, every))
    if rounds and (not points or points[-1] != rounds):
        points.append(rounds)
    return points


@dataclass(frozen=True)
class PayloadHead:
    """What precedes the range-coded measurements in a PSC payload (docs/FORMAT.md)."""

    threads: int  # CPU threads both sides compute with
    signature: int  # 32-bit hash of the encoder's compute signature (device type, dtype, versions)
    measurements: int  # coded measurements m
    pixel_check: int  # low 16 bits of CRC-32 of the default reconstruction's uint8 pixels
    checks: tuple[int, ...]  # low 16 bits of the running CRC-32 of H's rows at each checkpoint

    def to_bytes(self) -> bytes:
        out = bytes([self.threads]) + self.signature.to_bytes(SIGNATURE_BYTES, "little")
        out += encode_varint(self.measurements) + self.pixel_check.to_bytes(CHECK_BYTES, "little")
        return out + b"".join(c.to_bytes(CHECK_BYTES, "little") for c in self.checks)


def head_size(measurements: int, rounds: int, every: int) -> int:
    """Bytes of a :class:`PayloadHead` (without building one)."""
    return 1 + SIGNATURE_BYTES + len(encode_varint(measurements)) + CHECK_BYTES * (1 + len(checkpoints(rounds, every)))


def read_head(params: PSCParams, payload: bytes) -> tuple[PayloadHead, bytes]:
    """Split a payload into its head and the range-coded words (validated against the parameters)."""
    reader = Reader(payload, len(payload))
    threads = reader.u8("thread count")
    if threads < 1:
        raise CorruptFileError("PSC payload names 0 threads")
    signature = int.from_bytes(reader.take(SIGNATURE_BYTES, "signature hash"), "little")
    measurements = reader.varint("measurement count", params.max_measurements)
    pixel_check = int.from_bytes(reader.take(CHECK_BYTES, "pixel checksum"), "little")
    count = len(checkpoints(rounds_for(measurements, params.rows), params.check_every))
    checks = tuple(int.from_bytes(reader.take(CHECK_BYTES, "H checksum"), "little") for _ in range(count))
    coded = payload[reader.pos :]
    if len(coded) % 4:
        raise CorruptFileError(f"PSC range-coded part has {len(coded)} bytes, not a whole number of 32-bit words")
    if measurements and not coded:
        raise CorruptFileError(f"PSC payload announces {measurements} measurements but holds no coded data")
    return PayloadHead(threads, signature, measurements, pixel_check, checks), coded


def worst_case_payload(params: PSCParams) -> int:
    """Largest payload these parameters can give (every measurement at the range coder's worst cost)."""
    m = params.max_measurements
    words = -(-m * MAX_SYMBOL_BITS // 32) + 2
    return head_size(m, params.iterations, params.check_every) + 4 * words


def signature_hash(signature: str) -> int:
    """The 32-bit hash a file stores of a compute signature: BLAKE2b (4-byte digest) of its UTF-8, little-endian."""
    return int.from_bytes(hashlib.blake2b(signature.encode("utf-8"), digest_size=SIGNATURE_BYTES).digest(), "little")
