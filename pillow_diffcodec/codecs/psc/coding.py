"""Quantisation and entropy coding of PSC measurements (numpy + constriction; no torch).

The PSC paper quantises measurements to float8 and its official code writes no bitstream. Here each
measurement ``y_j = <h_j, x>`` is quantised on a fixed grid (uniform step, or the e4m3 float8 values)
and range-coded (constriction, 24-bit precision) with a *posterior-predictive* Laplace model: both
sides know the s posterior samples the row ``h_j`` came from, so ``mu_j`` (their mean projection) and
``b_j`` (their standard deviation along ``h_j``) are free side information. Measurements the samples
already agree on cost almost nothing; the Laplace tail keeps surprises affordable.
"""

from __future__ import annotations

import constriction
import numpy as np

from ...errors import CorruptFileError
from .format import PSCParams

UNIFORM_LIMIT = 32767  # uniform symbols q lie in [-UNIFORM_LIMIT, UNIFORM_LIMIT] (clamped)
FLOAT8_MAX = 448.0
MIN_SCALE_STEPS = 0.1  # uniform: Laplace scale at least this many steps
MIN_FLOAT8_SCALE = 1e-3
MIN_PROBABILITY = 1e-9


def _e4m3_values() -> np.ndarray:
    """The 253 distinct finite float8 e4m3fn values in ascending order (+0 and -0 merged; no NaN)."""
    values = set()
    for exponent in range(16):
        for mantissa in range(8):
            if exponent == 15 and mantissa == 7:
                continue  # NaN
            magnitude = (mantissa / 8) * 2.0**-6 if exponent == 0 else (1 + mantissa / 8) * 2.0 ** (exponent - 7)
            values.update((magnitude, -magnitude))
    return np.array(sorted(values), dtype=np.float64)


FLOAT8_GRID = _e4m3_values()
FLOAT8_EDGES = (FLOAT8_GRID[1:] + FLOAT8_GRID[:-1]) / 2  # cell boundaries between neighbouring values


class MeasurementCoder:
    """Quantiser + entropy model of one file's measurements (``params.quantizer``, ``params.step``)."""

    def __init__(self, params: PSCParams) -> None:
        self.uniform = params.quantizer == "uniform"
        self.step = params.step
        self.model = (
            constriction.stream.model.QuantizedLaplace(-UNIFORM_LIMIT, UNIFORM_LIMIT)
            if self.uniform else constriction.stream.model.Categorical(perfect=False)
        )

    def quantise(self, y: np.ndarray) -> np.ndarray:
        """Measurements (float64) -> symbols (int32): ``round(y / step)`` clamped, or the nearest e4m3 value's
        rank (saturating at +-448, ties towards the lower value)."""
        if self.uniform:
            return np.clip(np.rint(y / self.step), -UNIFORM_LIMIT, UNIFORM_LIMIT).astype(np.int32)
        y = np.clip(y, -FLOAT8_MAX, FLOAT8_MAX)
        return np.searchsorted(FLOAT8_EDGES, y, side="left").astype(np.int32)

    def values(self, symbols: np.ndarray) -> np.ndarray:
        """Symbols -> the dequantised measurements (float64) both sides continue with."""
        if self.uniform:
            return symbols.astype(np.float64) * self.step
        return FLOAT8_GRID[symbols]

    def _model_args(self, mean: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per-symbol model parameters: (mean, scale) in steps, or float8 cell probabilities."""
        if self.uniform:
            return mean / self.step, np.maximum(scale / self.step, MIN_SCALE_STEPS)
        scale = np.maximum(scale, MIN_FLOAT8_SCALE)[:, None]
        z = (FLOAT8_EDGES[None, :] - mean[:, None]) / scale
        cdf = np.where(z < 0, 0.5 * np.exp(np.minimum(z, 0)), 1 - 0.5 * np.exp(-np.maximum(z, 0)))
        ones = np.ones((len(mean), 1))
        probabilities = np.diff(np.concatenate([0 * ones, cdf, ones], axis=1), axis=1) + MIN_PROBABILITY
        return (probabilities / probabilities.sum(axis=1, keepdims=True),)

    def encode(self, encoder: constriction.stream.queue.RangeEncoder, symbol: int, mean: float, scale: float) -> None:
        """Append one symbol with its predictive model."""
        args = self._model_args(np.array([mean]), np.array([scale]))
        encoder.encode(np.array([symbol], dtype=np.int32), self.model, *args)

    def decode(
        self, decoder: constriction.stream.queue.RangeDecoder, mean: np.ndarray, scale: np.ndarray
    ) -> np.ndarray:
        """Read ``len(mean)`` symbols, one model per symbol (the same models the encoder used)."""
        if len(mean) == 0:
            return np.zeros(0, dtype=np.int32)
        try:
            return np.asarray(decoder.decode(self.model, *self._model_args(mean, scale)), dtype=np.int32)
        except BaseException as exc:  # constriction raises pyo3's PanicException, a BaseException
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise CorruptFileError(f"PSC measurements are corrupt: {exc}") from None


def new_encoder() -> constriction.stream.queue.RangeEncoder:
    return constriction.stream.queue.RangeEncoder()


def new_decoder(coded: bytes) -> constriction.stream.queue.RangeDecoder:
    return constriction.stream.queue.RangeDecoder(np.frombuffer(coded, dtype="<u4").astype(np.uint32))
