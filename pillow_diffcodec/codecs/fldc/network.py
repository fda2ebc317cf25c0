"""FLDC's trainable networks and the frozen model's continuous-time pieces (torch).

Relic, Azevedo, Gross, Schroers, "Lossy image compression with foundation diffusion models" (ECCV 2024):

* :class:`ParameterEstimator` is ``P_phi(y, lambda)`` (Sec. 4.2): a fully convolutional network of
  alternating plain and stride-2 convolutions with growing width and SiLU between them, whose input is the
  latent ``y`` with ``log lambda`` broadcast as one extra channel, and whose last convolution gives
  ``2 C + 1`` maps that are mean-pooled to one number each: per latent channel a log-scale ``s_c`` and a
  shift ``b_c`` of the affine transform ``T(y, gamma) = exp(s_c) y + b_c`` (Eq. 4-5), and the timestep
  fraction ``sigmoid(.)`` in [0, 1] (9 numbers for a 4-channel latent).
* :class:`FLDCNetwork` adds the entropy model of ``z = T(y, gamma)`` (Sec. 4.3): the mean-scale hyperprior
  shared with CDC (:class:`pillow_diffcodec.learned_transform.MeanScaleHyperprior`; the paper uses
  Entroformer), with its integer tables for portable range coding.
* :func:`alpha_bar` is the continuous interpolation of the frozen model's ``alphas_cumprod`` (log-linear
  between training timesteps) so that the timestep is differentiable in training (Sec. 4.4);
  :func:`predict_x0` calls the frozen UNet at a continuous timestep.

Quantisation rounds on the hyperprior's mean-shifted grid, ``z_hat = mu + round(z - mu)`` (Minnen et al.
2018), instead of the paper's ``floor(z)``: the shift ``b_c`` makes the two equivalent up to an offset, and
the shifted grid costs fewer bits. Dequantisation is ``y_hat = (z_hat - b) exp(-s)`` (Eq. 5).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...learned_transform import (
    EntropyTables,
    MeanScaleHyperprior,
    export_with_tables,
    gaussian_likelihood,
    load_with_tables,
)

LOG_SCALE_OFFSET = math.log(2.0)  # at initialisation the quantiser's step is 1/2 of a latent unit
TIME_LOGIT_OFFSET = -3.0  # at initialisation t is sigmoid(-3) = 4.7 % of the schedule


@dataclass(frozen=True)
class FLDCArchitecture:
    """Widths of P_phi (three stages) and of the hyperprior, for a latent of ``latent`` channels."""

    latent: int = 4
    estimator: tuple[int, int, int] = (32, 64, 96)
    hyper_width: int = 48
    hyper: int = 16

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FLDCArchitecture:
        return cls(int(data["latent"]), tuple(int(w) for w in data["estimator"]), int(data["hyper_width"]),
                   int(data["hyper"]))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "estimator": list(self.estimator)}

    @property
    def gamma_count(self) -> int:
        """Numbers P_phi predicts: 2 per latent channel and the timestep fraction."""
        return 2 * self.latent + 1


class ParameterEstimator(nn.Module):
    """``P_phi(y, lambda)`` -> (log-scales (B, C), shifts (B, C), timestep fractions (B,)), Sec. 4.2."""

    def __init__(self, latent: int, widths: tuple[int, int, int]) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.net = nn.Sequential(
            nn.Conv2d(latent + 1, w1, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w1, w2, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(w2, w2, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w2, w3, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(w3, w3, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w3, 2 * latent + 1, 3, padding=1),
        )
        self.latent = latent

    def forward(self, y: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        plane = torch.log(lam.float()).view(-1, 1, 1, 1).expand(y.shape[0], 1, *y.shape[2:])
        pooled = self.net(torch.cat([y, plane.to(y.dtype)], dim=1)).mean(dim=(2, 3))
        c = self.latent
        log_scale = pooled[:, :c] + LOG_SCALE_OFFSET
        return log_scale, pooled[:, c : 2 * c], torch.sigmoid(pooled[:, 2 * c] + TIME_LOGIT_OFFSET)


def transform(y: torch.Tensor, log_scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``T(y, gamma) = exp(s_c) y + b_c`` per channel (Eq. 4 before rounding)."""
    return y * log_scale.exp()[:, :, None, None] + shift[:, :, None, None]


def inverse_transform(z: torch.Tensor, log_scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``T^-1(z, gamma) = (z - b_c) exp(-s_c)`` (Eq. 5)."""
    return (z - shift[:, :, None, None]) * torch.exp(-log_scale)[:, :, None, None]


class FLDCNetwork(nn.Module):
    """P_phi and the hyperprior of ``z = T(y, gamma)``, with the integer tables the files are coded with."""

    def __init__(self, arch: FLDCArchitecture) -> None:
        super().__init__()
        self.arch = arch
        self.estimator = ParameterEstimator(arch.latent, arch.estimator)
        self.hyperprior = MeanScaleHyperprior(arch.latent, arch.hyper, arch.hyper_width)
        self.tables: EntropyTables | None = None

    def update_tables(self) -> EntropyTables:
        self.tables = EntropyTables.from_prior(self.hyperprior.prior)
        return self.tables

    def entropy_tables(self) -> EntropyTables:
        return self.tables or self.update_tables()

    def rate(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training: (z with straight-through rounding on the mean-shifted grid, bits per image (B,)).

        The likelihoods use additive uniform noise (Balle et al. 2017), the decoder path sees the rounded
        values with straight-through gradients, as :class:`pillow_diffcodec.learned_transform.LearnedTransform`."""
        h = self.hyperprior.h_a(z)
        h_noisy = h + torch.empty_like(h).uniform_(-0.5, 0.5)
        h_hat = h + (torch.round(h) - h).detach()
        mean, scale = self.hyperprior.params(h_hat)
        z_noisy = z + torch.empty_like(z).uniform_(-0.5, 0.5)
        z_hat = z + (torch.round(z - mean) - (z - mean)).detach()
        bits = -torch.log2(gaussian_likelihood(z_noisy, mean, scale)).flatten(1).sum(1)
        bits = bits - torch.log2(self.hyperprior.prior.likelihood(h_noisy)).flatten(1).sum(1)
        return z_hat, bits

    def export_state(self) -> dict[str, torch.Tensor]:
        """Float16 weights and the integer tables, flat (:func:`~pillow_diffcodec.learned_transform.export_with_tables`)."""
        return export_with_tables(self, self.entropy_tables())

    def load_export(self, state: dict[str, torch.Tensor]) -> None:
        self.tables = load_with_tables(self, state)


# -- the frozen diffusion model at continuous time ---------------------------------------------------------


def alpha_bar(alphas_cumprod: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """``abar(tau)`` for continuous timesteps tau in [0, N-1]: log-linear interpolation of ``alphas_cumprod``
    between the neighbouring training timesteps (Sec. 4.4: a continuous function, so d/dtau exists)."""
    log_abar = torch.log(alphas_cumprod.to(device=tau.device, dtype=torch.float32))
    n = log_abar.shape[0]
    tau = tau.clamp(0.0, n - 1.0)
    low = tau.detach().floor().clamp(max=n - 2).long()
    frac = tau - low.to(tau.dtype)
    return torch.exp(log_abar[low] + frac * (log_abar[low + 1] - log_abar[low]))


def alpha_bar_exact(alphas_cumprod: torch.Tensor, tau: float) -> float:
    """:func:`alpha_bar` in float64 arithmetic on Python floats, for the decoder (same value on every machine)."""
    n = int(alphas_cumprod.shape[0])
    tau = min(max(float(tau), 0.0), n - 1.0)
    low = min(int(math.floor(tau)), n - 2)
    a, b = math.log(float(alphas_cumprod[low])), math.log(float(alphas_cumprod[low + 1]))
    return math.exp(a + (tau - low) * (b - a))


def predict_x0(base: Any, x_t: torch.Tensor, tau: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """Clean-latent estimate from the frozen UNet of a :class:`~pillow_diffcodec.models.latent.LatentDiffusionModel`
    at continuous timesteps ``tau`` (B,) with ``abar`` (B,) = abar(tau); differentiable in x_t and tau."""
    embeddings = getattr(base, "_embeddings", None)
    text = {} if embeddings is None else {"encoder_hidden_states": embeddings[-1:].expand(x_t.shape[0], -1, -1)}
    out = base.unet(x_t.to(base.dtype), tau.to(x_t.device), **text).sample.float()
    a = abar.view(-1, 1, 1, 1)
    kind = base.schedule.prediction_type
    if kind == "epsilon":
        return (x_t - (1 - a).sqrt() * out) / a.sqrt()
    if kind == "v_prediction":
        return a.sqrt() * x_t - (1 - a).sqrt() * out
    return out


def pad_latent(y: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad a latent (B, C, H, W) on the bottom and right to multiples of ``multiple``."""
    ph, pw = -y.shape[2] % multiple, -y.shape[3] % multiple
    return F.pad(y, (0, pw, 0, ph), mode="replicate") if ph or pw else y
