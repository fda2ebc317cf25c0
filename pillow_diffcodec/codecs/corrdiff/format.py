"""CorrDiff parameters, decode options and payload layout, free of torch so that headers parse without it.

See :mod:`.runner` for the codec and docs/FORMAT.md ("CorrDiff parameters (codec id 4)") for the bytes.
The header stores the rate point, the number of DDIM steps and the metric the encoder minimised (the
gammas depend on all three); the payload is the float16 gammas, one per step, then CDC's latent payload
(:class:`pillow_diffcodec.codecs.cdc.format.Payload`). ``correction`` and ``e2e`` are decode options.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ...container import Reader, encode_varint
from ...errors import CorruptFileError, InvalidParameterError
from ...options import Option
from ..cdc.format import MAX_RATE_POINTS, worst_case_payload

DEFAULT_STEPS = 8  # the paper's (Sec. 4.1: DDIM with 8 steps, 8 float16 gammas = 128 bits)
MAX_STEPS = 1000
GAMMA_BYTES = 2  # float16, little-endian
# The metric M of Eq. 20 the encoder minimised, by its header code. Only weight-free metrics: the paper's
# LPIPS-VGG needs downloaded weights. For MSE the minimiser has a closed form (see runner.best_gamma).
METRICS = {"mse": 0}
METRIC_NAMES = {code: name for name, code in METRICS.items()}

CORRDIFF_DECODE_OPTIONS = (
    Option("correction", "replay the stored gammas (Algorithm 2; the default); off: plain conditional DDIM from "
           "the same x_T, the paper's ablation", type=None),
    Option("e2e", "return the end-to-end decoder's image D(y_hat) alone (one network call, no diffusion)",
           type=None),
)


def check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidParameterError(f"Expected {name} True or False, got {value!r}")
    return bool(value)


@dataclass(frozen=True)
class CorrDiffParams:
    """CorrDiff configuration: the model's rate point, the DDIM steps (one gamma each) and the metric M."""

    rate_point: int = field(default=0, metadata={"help": "index of the model's rate point, lowest rate first"})
    steps: int = field(default=DEFAULT_STEPS, metadata={"help": "DDIM steps, each with one stored float16 gamma"})
    metric: str = field(default="mse", metadata={"help": "distortion M the gammas minimise (mse: exact closed form)",
                                                           "choices": tuple(METRICS)})

    def __post_init__(self) -> None:
        value = self.rate_point
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < MAX_RATE_POINTS:
            raise InvalidParameterError(f"Expected rate_point in [0, {MAX_RATE_POINTS - 1}], got {value!r}")
        steps = self.steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= MAX_STEPS:
            raise InvalidParameterError(f"Expected steps in [1, {MAX_STEPS}], got {steps!r}")
        if self.metric not in METRICS:
            raise InvalidParameterError(f"Expected metric in {sorted(METRICS)}, got {self.metric!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CorrDiffParams:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidParameterError(
                f"Unknown CORRDIFF option(s) {sorted(unknown)}; expected {sorted(cls.__dataclass_fields__)}")
        return cls(**data)

    def to_bytes(self) -> bytes:
        """Header encoding: varint rate point, varint steps, u8 metric code."""
        return encode_varint(self.rate_point) + encode_varint(self.steps) + bytes([METRICS[self.metric]])

    @classmethod
    def from_bytes(cls, data: bytes) -> CorrDiffParams:
        reader = Reader(data, len(data))
        rate_point = reader.varint("rate point", MAX_RATE_POINTS - 1)
        steps = reader.varint("steps", MAX_STEPS)
        code = reader.take(1, "metric")[0]
        if reader.pos != len(data):
            raise CorruptFileError("CORRDIFF parameters have trailing bytes")
        if code not in METRIC_NAMES or steps < 1:
            raise CorruptFileError(f"CORRDIFF header has metric code {code} and {steps} steps; expected a code in "
                                   f"{sorted(METRIC_NAMES)} and steps >= 1")
        return cls(rate_point, steps, METRIC_NAMES[code])

    def decode_model_calls(self, correction: bool = True, e2e: bool = False, **_: Any) -> int:
        """Model calls of a decode: one U-Net call per step plus D (D alone with ``e2e``)."""
        check_flag("correction", correction)
        return 1 if check_flag("e2e", e2e) else self.steps + 1


def gamma_bytes(gammas: np.ndarray) -> bytes:
    return np.asarray(gammas, dtype="<f2").tobytes()


def split_payload(data: bytes, steps: int) -> tuple[np.ndarray, bytes]:
    """(gammas as float16, the CDC latent payload); CorruptFileError for a short payload or a gamma outside [0, 1]."""
    size = GAMMA_BYTES * steps
    if len(data) < size:
        raise CorruptFileError(f"CORRDIFF payload has {len(data)} bytes, fewer than its {steps} gammas need ({size})")
    gammas = np.frombuffer(data[:size], dtype="<f2")
    bad = ~(np.isfinite(gammas) & (gammas >= 0) & (gammas <= 1))
    if bad.any():
        index = int(np.argmax(bad))
        raise CorruptFileError(f"CORRDIFF gamma {index} is {float(gammas[index])!r}, outside [0, 1]")
    return gammas, data[size:]


def worst_case(steps: int, y_symbols: int, z_symbols: int) -> int:
    return GAMMA_BYTES * steps + worst_case_payload(y_symbols, z_symbols)
