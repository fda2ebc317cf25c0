"""A learned transform with a mean-scale hyperprior, and its portable entropy coding.

The shared core of the trained codecs (CDC, CorrDiff):

* :class:`AnalysisTransform`: a ResNet-style encoder ``y = g_a(x)`` with four stride-2 stages (1/16
  resolution), as the analysis transforms of Balle et al. 2018 and Minnen et al. 2018 but with residual
  blocks instead of GDN; :class:`SynthesisTransform` is its mirror ``x = g_s(y_hat)`` (CorrDiff's end-to-end decoder).
* :class:`MeanScaleHyperprior`: Minnen, Balle, Toderici, "Joint autoregressive and hierarchical priors
  for learned image compression" (NeurIPS 2018), without the autoregressive context: a hyper-latent
  ``z = h_a(y)`` with a factorised prior, and ``(mu, sigma) = h_s(z_hat)`` parameterising a Gaussian for
  each element of ``y`` (the "mean-scale" model, their Sec. 3 and Fig. 4).
* :class:`FactorizedPrior`: the factorised density of ``z``, per channel a mixture of logistics whose
  CDF is learned (a simpler stand-in for Balle et al. 2018's non-parametric density, App. 6.1).

Training uses additive uniform noise for the likelihoods (Balle et al. 2017) and straight-through
rounding for what the decoder sees (Minnen & Singh 2020, "Channel-wise autoregressive entropy models",
Sec. 3.1); test time rounds ``y - mu`` and ``z``.

Entropy coding (:class:`EntropyTables`) never evaluates a float CDF on the decoding machine: the
probabilities are integer frequency tables computed once when a model is exported and stored with
its weights, so encoder and decoder derive bit-identical models from quantised indices. ``z`` has one
table per channel; ``y`` uses CompressAI's *scale table* idea (Begaint et al. 2020): the predicted
scale is quantised to an index into a fixed list of scales, each with its own integer Gaussian table.
A scale index computed differently on another machine (float differences in ``h_s``) makes the
decoded symbols differ; the CRCs stored next to each stream (see :mod:`pillow_diffcodec.codecs.cdc.runner`)
turn that into an error instead of a wrong image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import constriction
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import CorruptFileError

LIKELIHOOD_BOUND = 1e-9
TABLE_PRECISION = 16  # integer tables sum to 2**16
SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 64.0, 64  # CompressAI's lower bound; a smaller top for 1/16 latents
TAIL_SIGMAS = 6.0  # a Gaussian table covers mu +- TAIL_SIGMAS * sigma (symbols beyond are clamped)
Z_TAIL = 1e-6  # a z table covers the quantiles [Z_TAIL, 1 - Z_TAIL] of its channel
MAX_Z_HALF_WIDTH = 255


def scale_table() -> np.ndarray:
    """The fixed scales sigma_0 < ... < sigma_63, log-spaced in [0.11, 64] (CompressAI's get_scale_table)."""
    return np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a GELU between and a skip connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.conv1(F.gelu(x))))


class AnalysisTransform(nn.Module):
    """``g_a``: image in [-1, 1] (B, 3, H, W) -> latent ``y`` (B, latent, H/16, W/16)."""

    def __init__(self, width: int, latent: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 5, stride=2, padding=2)]
        for _ in range(2):
            layers += [ResBlock(width), nn.Conv2d(width, width, 5, stride=2, padding=2)]
        layers += [ResBlock(width), nn.Conv2d(width, latent, 5, stride=2, padding=2)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SynthesisTransform(nn.Module):
    """``g_s``: latent ``y_hat`` (B, latent, H/16, W/16) -> image (B, 3, H, W), the mirror of :class:`AnalysisTransform`
    (four 2x up-samplings by 3x3 convolution + pixel shuffle, residual blocks between). CorrDiff's end-to-end
    decoder D."""

    def __init__(self, width: int, latent: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(latent, 4 * width, 3, padding=1), nn.PixelShuffle(2)]
        for _ in range(2):
            layers += [ResBlock(width), nn.Conv2d(width, 4 * width, 3, padding=1), nn.PixelShuffle(2)]
        layers += [ResBlock(width), nn.Conv2d(width, 4 * 3, 3, padding=1), nn.PixelShuffle(2)]
        self.net = nn.Sequential(*layers)

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.net(y_hat)


class FactorizedPrior(nn.Module):
    """Per-channel density of the hyper-latent: a mixture of ``components`` logistics (learned CDF)."""

    def __init__(self, channels: int, components: int = 3) -> None:
        super().__init__()
        spread = torch.linspace(-2.0, 2.0, components)
        self.loc = nn.Parameter(spread.repeat(channels, 1))
        self.log_scale = nn.Parameter(torch.zeros(channels, components))
        self.logits = nn.Parameter(torch.zeros(channels, components))

    def cdf(self, z: torch.Tensor) -> torch.Tensor:
        """CDF of each element of ``z`` (B, C, H, W) under its channel's mixture."""
        loc, scale = self.loc[None, :, None, None, :], self.log_scale.exp()[None, :, None, None, :]
        weights = self.logits.softmax(-1)[None, :, None, None, :]
        return (weights * torch.sigmoid((z[..., None] - loc) / scale)).sum(-1)

    def likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """P(round(z) = z) for integer-centred ``z``: CDF(z + 1/2) - CDF(z - 1/2)."""
        return (self.cdf(z + 0.5) - self.cdf(z - 0.5)).clamp_min(LIKELIHOOD_BOUND)


def gaussian_likelihood(y: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """P of the unit bin around ``y`` under N(mean, scale^2) (Minnen et al. 2018, eq. 2)."""
    scale = scale.clamp_min(SCALE_MIN)
    normal = torch.distributions.Normal(0.0, 1.0)
    centred = (y - mean).abs()  # evaluate the lower tail for accuracy, as CompressAI does
    upper = normal.cdf((0.5 - centred) / scale)
    lower = normal.cdf((-0.5 - centred) / scale)
    return (upper - lower).clamp_min(LIKELIHOOD_BOUND)


class MeanScaleHyperprior(nn.Module):
    """``h_a`` and ``h_s`` of Minnen et al. 2018 (two stride-2 stages each) and the prior on ``z``."""

    def __init__(self, latent: int, hyper: int, width: int) -> None:
        super().__init__()
        self.h_a = nn.Sequential(
            nn.Conv2d(latent, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 5, stride=2, padding=2), nn.GELU(),
            nn.Conv2d(width, hyper, 5, stride=2, padding=2),
        )
        self.h_s = nn.Sequential(
            nn.Conv2d(hyper, 4 * width, 3, padding=1), nn.PixelShuffle(2), nn.GELU(),
            nn.Conv2d(width, 4 * width, 3, padding=1), nn.PixelShuffle(2), nn.GELU(),
            nn.Conv2d(width, 2 * latent, 3, padding=1),
        )
        self.prior = FactorizedPrior(hyper)

    def params(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, scale) of ``y`` from the quantised hyper-latent."""
        mean, raw = self.h_s(z_hat).chunk(2, dim=1)
        return mean, F.softplus(raw) + SCALE_MIN


@dataclass
class TransformOutput:
    """What a training forward pass gives: the decoder's latent and the rate in bits."""

    y_hat: torch.Tensor
    bits: torch.Tensor  # (B,) total bits of y and z per image


class LearnedTransform(nn.Module):
    """Analysis transform + mean-scale hyperprior: ``x -> (y_hat, bits)`` (noise in training, rounding at test)."""

    def __init__(self, width: int, latent: int, hyper: int) -> None:
        super().__init__()
        self.latent, self.hyper = latent, hyper
        self.g_a = AnalysisTransform(width, latent)
        self.hyperprior = MeanScaleHyperprior(latent, hyper, width)

    def forward(self, x: torch.Tensor) -> TransformOutput:
        y = self.g_a(x)
        z = self.hyperprior.h_a(y)
        if self.training:
            z_noisy = z + torch.empty_like(z).uniform_(-0.5, 0.5)
            z_hat = z + (torch.round(z) - z).detach()
        else:
            z_noisy = z_hat = torch.round(z)
        mean, scale = self.hyperprior.params(z_hat)
        if self.training:
            y_noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
            y_hat = mean + (y - mean) + (torch.round(y - mean) - (y - mean)).detach()
        else:
            y_noisy = y_hat = mean + torch.round(y - mean)
        bits_y = -torch.log2(gaussian_likelihood(y_noisy, mean, scale)).flatten(1).sum(1)
        bits_z = -torch.log2(self.hyperprior.prior.likelihood(z_noisy)).flatten(1).sum(1)
        return TransformOutput(y_hat, bits_y + bits_z)


def _integer_pmf(probabilities: np.ndarray) -> np.ndarray:
    """Float probabilities (summing to ~1) -> int32 frequencies >= 1 summing to exactly 2**TABLE_PRECISION.

    Largest-remainder rounding; only used when a model is exported (the tables are then stored).
    """
    total = 1 << TABLE_PRECISION
    n = len(probabilities)
    p = np.maximum(np.asarray(probabilities, dtype=np.float64), 0.0)
    p = p / p.sum()
    freq = np.floor(p * (total - n)).astype(np.int64) + 1
    rest = total - int(freq.sum())
    order = np.argsort(-(p * (total - n) - np.floor(p * (total - n))), kind="stable")
    freq[order[:rest]] += 1
    return freq.astype(np.int32)


def gaussian_tables(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer tables of N(0, s^2) over symbols -L..L (L = ceil(TAIL_SIGMAS * s)), tails folded into the ends.

    Returns (half widths L (S,), frequencies (S, 2 * max L + 1), zero-padded on the right).
    """
    halves = np.ceil(TAIL_SIGMAS * scales).astype(np.int64)
    width = 2 * int(halves.max()) + 1
    table = np.zeros((len(scales), width), dtype=np.int32)
    for i, (scale, half) in enumerate(zip(scales, halves)):
        edges = np.arange(-half, half + 2) - 0.5
        cdf = np.array([0.5 * math.erfc(-e / (scale * math.sqrt(2))) for e in edges])
        cdf[0], cdf[-1] = 0.0, 1.0
        table[i, : 2 * half + 1] = _integer_pmf(np.diff(cdf))
    return halves.astype(np.int32), table


def factorized_tables(prior: FactorizedPrior) -> tuple[np.ndarray, np.ndarray]:
    """Integer tables of each channel of ``z``: (lowest symbol per channel (C,), frequencies (C, width))."""
    with torch.no_grad():
        grid = torch.arange(-MAX_Z_HALF_WIDTH, MAX_Z_HALF_WIDTH + 2, dtype=torch.float64) - 0.5
        channels = prior.loc.shape[0]
        cdf = prior.double().cdf(grid.view(1, 1, 1, -1).expand(1, channels, 1, -1))[0, :, 0].numpy()
        prior.float()
    lows, highs = [], []
    for c in range(channels):
        inside = np.nonzero((cdf[c, 1:] > Z_TAIL) & (cdf[c, :-1] < 1 - Z_TAIL))[0]
        lows.append(int(inside.min()) if len(inside) else MAX_Z_HALF_WIDTH)
        highs.append(int(inside.max()) if len(inside) else MAX_Z_HALF_WIDTH)
    width = max(h - lo for lo, h in zip(lows, highs)) + 1
    table = np.zeros((channels, width), dtype=np.int32)
    for c, (lo, hi) in enumerate(zip(lows, highs)):
        pmf = np.diff(cdf[c, lo : hi + 2])
        pmf[0] += cdf[c, lo]
        pmf[-1] += 1.0 - cdf[c, hi + 1]
        table[c, : hi - lo + 1] = _integer_pmf(pmf)
    return np.asarray(lows, dtype=np.int32) - MAX_Z_HALF_WIDTH, table


def _support(table: np.ndarray) -> np.ndarray:
    """Number of used entries of each row of a zero-padded frequency table."""
    used = table > 0
    return np.where(used.any(1), used.shape[1] - np.argmax(used[:, ::-1], axis=1), 0)


class EntropyTables:
    """The integer probability tables both sides code with (stored in the model file).

    ``z_low``/``z_freq``: per channel, the lowest symbol and the frequencies; ``y_half``/``y_freq``: per
    scale-table entry, the half width L and the frequencies of symbols -L..L. Every row sums to 2**16.
    """

    def __init__(self, z_low: np.ndarray, z_freq: np.ndarray, y_half: np.ndarray, y_freq: np.ndarray) -> None:
        self.z_low, self.z_freq = np.asarray(z_low, np.int64), np.asarray(z_freq, np.int64)
        self.y_half, self.y_freq = np.asarray(y_half, np.int64), np.asarray(y_freq, np.int64)
        self.z_size, self.y_size = _support(self.z_freq), 2 * self.y_half + 1
        self.scales = torch.as_tensor(scale_table(), dtype=torch.float32)
        self._models: dict[tuple[str, int], constriction.stream.model.Categorical] = {}

    @classmethod
    def from_prior(cls, prior: FactorizedPrior) -> EntropyTables:
        z_low, z_freq = factorized_tables(prior)
        return cls(z_low, z_freq, *gaussian_tables(scale_table()))

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tables as int32 tensors, to store next to the weights."""
        return {name: torch.from_numpy(getattr(self, name).astype(np.int32))
                for name in ("z_low", "z_freq", "y_half", "y_freq")}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> EntropyTables:
        return cls(*(tensors[name].numpy() for name in ("z_low", "z_freq", "y_half", "y_freq")))

    def _model(self, kind: str, row: int) -> constriction.stream.model.Categorical:
        """constriction's categorical model of one table row: exact dyadic probabilities f / 2**16."""
        key = (kind, row)
        if key not in self._models:
            freq = (self.z_freq if kind == "z" else self.y_freq)[row]
            size = (self.z_size if kind == "z" else self.y_size)[row]
            self._models[key] = constriction.stream.model.Categorical(
                freq[:size].astype(np.float64) / (1 << TABLE_PRECISION), perfect=False)
        return self._models[key]

    def scale_indices(self, scale: torch.Tensor) -> torch.Tensor:
        """Index of the first table scale >= each predicted scale (the last one above the table)."""
        return torch.bucketize(scale.float().contiguous(), self.scales).clamp_max(SCALE_LEVELS - 1)

    def clamp_z(self, symbols: torch.Tensor) -> torch.Tensor:
        """Clamp rounded hyper-latents (B, C, H, W) to their channels' table ranges (both sides use the result)."""
        low = torch.as_tensor(self.z_low, dtype=symbols.dtype, device=symbols.device).view(1, -1, 1, 1)
        high = low + torch.as_tensor(self.z_size - 1, dtype=symbols.dtype, device=symbols.device).view(1, -1, 1, 1)
        return torch.maximum(torch.minimum(symbols, high), low)

    def clamp_y(self, symbols: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Clamp rounded residuals ``round(y - mu)`` to +-L of their scale's table."""
        half = torch.as_tensor(self.y_half, dtype=symbols.dtype, device=symbols.device)[indices]
        return torch.maximum(torch.minimum(symbols, half), -half)

    def encode_z(self, encoder: constriction.stream.queue.RangeEncoder, symbols: np.ndarray) -> None:
        """Code clamped hyper-latents (C, H, W), channel by channel."""
        for c in range(symbols.shape[0]):
            values = (symbols[c].reshape(-1) - self.z_low[c]).astype(np.int32)
            encoder.encode(values, self._model("z", c))

    def decode_z(self, decoder: constriction.stream.queue.RangeDecoder, shape: tuple[int, int, int]) -> np.ndarray:
        count = shape[1] * shape[2]
        out = np.empty(shape, dtype=np.int64)
        for c in range(shape[0]):
            out[c] = (_decode(decoder, self._model("z", c), count) + self.z_low[c]).reshape(shape[1:])
        return out

    def encode_y(self, encoder: constriction.stream.queue.RangeEncoder, symbols: np.ndarray,
                 indices: np.ndarray) -> None:
        """Code clamped residual symbols, grouped by scale index (ascending), raster order within a group."""
        flat_symbols, flat_indices = symbols.reshape(-1), indices.reshape(-1)
        for i in np.unique(flat_indices):
            chosen = flat_symbols[flat_indices == i]
            encoder.encode((chosen + self.y_half[i]).astype(np.int32), self._model("y", int(i)))

    def decode_y(self, decoder: constriction.stream.queue.RangeDecoder, indices: np.ndarray) -> np.ndarray:
        flat_indices = indices.reshape(-1)
        out = np.empty(flat_indices.shape, dtype=np.int64)
        for i in np.unique(flat_indices):
            where = flat_indices == i
            out[where] = _decode(decoder, self._model("y", int(i)), int(where.sum())) - self.y_half[i]
        return out.reshape(indices.shape)


TABLE_PREFIX = "tables."  # exported weights files hold the integer tables under this prefix


def export_with_tables(network: nn.Module, tables: EntropyTables) -> dict[str, torch.Tensor]:
    """A network's weights as float16 (the model *is* the rounded weights) and its integer tables, flat: what a
    CDC, CorrDiff or FLDC weights file holds."""
    state = {k: v.detach().half().contiguous() for k, v in network.state_dict().items()}
    return {**state, **{TABLE_PREFIX + k: v for k, v in tables.tensors().items()}}


def load_with_tables(network: nn.Module, state: dict[str, torch.Tensor]) -> EntropyTables:
    """Load :func:`export_with_tables`'s ``state`` into ``network`` (weights back to its dtype); its tables."""
    tables = {k.removeprefix(TABLE_PREFIX): v for k, v in state.items() if k.startswith(TABLE_PREFIX)}
    network.load_state_dict({k: v for k, v in state.items() if not k.startswith(TABLE_PREFIX)})
    return EntropyTables.from_tensors(tables)


def _decode(decoder: constriction.stream.queue.RangeDecoder, model: constriction.stream.model.Categorical,
            count: int) -> np.ndarray:
    """``count`` symbols, turning constriction's panics on a damaged stream into CorruptFileError."""
    try:
        return np.asarray(decoder.decode(model, count), dtype=np.int64)
    except BaseException as exc:  # constriction raises pyo3's PanicException, a BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise CorruptFileError(f"CDC range-coded stream is damaged: {exc}") from None
